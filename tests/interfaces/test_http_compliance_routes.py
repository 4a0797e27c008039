"""The operator's non-compliance routes (interfaces/compliance_routes.py): admin keys only,
clear errors, nothing changed by a refusal."""

from __future__ import annotations

from tests.interfaces.conftest import PEER_NAME, Api


def test_admin_reads_evidence_and_probes_others_are_refused(api: Api) -> None:
    client = api.client
    assert client.get("/v1/federation/evidence", headers=api.admin).json() == {"evidence": []}
    assert client.get("/v1/federation/probes", headers=api.admin).json() == {"probes": []}
    missing = client.get("/v1/federation/evidence/evid_nope", headers=api.admin)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    for headers in (api.agent, api.token, {}):
        refused = client.get("/v1/federation/evidence", headers=headers)
        assert refused.status_code in (401, 403), refused.text
        assert "error" in refused.json()


def test_reinstating_a_peer_that_is_not_isolated_is_a_clear_400(api: Api) -> None:
    client = api.client
    answer = client.post(f"/v1/federation/peers/{PEER_NAME}/reinstate", headers=api.admin)
    assert answer.status_code == 400, answer.text
    assert "not isolated" in answer.json()["error"]["message"]
    unknown = client.post("/v1/federation/peers/nobody.example/reinstate", headers=api.admin)
    assert unknown.status_code == 404
    agent = client.post(f"/v1/federation/peers/{PEER_NAME}/reinstate", headers=api.agent)
    assert agent.status_code == 403
