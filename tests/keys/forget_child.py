"""Child process of the kill test: open a node, forget a batch, and SIGKILL itself at a step.

Usage: forget_child.py HOME KILL_AT ARTIFACT_ID...

Every step of the forget batch is announced: creating a root key; each committed key-tree
transaction (``after-commit-plan`` when it names a root before the backend makes it,
``-intent`` when it holds the batch's intent); destroying a root key, or destroying it and
making the next standby root, before and after. Each is announced on stdout as ``STEP n name``
before it happens; at step ``KILL_AT`` the process kills itself with SIGKILL, as a power cut
would. With
``KILL_AT`` = -1 it runs to the end, and with -2 it prints ``READY`` before forgetting, so that
the parent can kill it at a random moment instead. The instrumentation wraps the objects from
outside: the product code has no test hooks.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oblivio.core.identifiers import ArtifactId
from oblivio.keys.backend import RootKeyPurpose
from oblivio.keys.custody import KeyTreeCustody
from oblivio.keys.key_tree import JournalEntry, KeyTreeNodes, RootPlan
from oblivio.node.node import open_node


def main() -> None:
    home, kill_at, ids = Path(sys.argv[1]), int(sys.argv[2]), [ArtifactId(a) for a in sys.argv[3:]]
    node = open_node(home)
    custody = node.vault.custody
    assert isinstance(custody, KeyTreeCustody)
    step = [0]

    def point(name: str) -> None:
        print(f"STEP {step[0]} {name}", flush=True)
        if step[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        step[0] += 1

    backend = custody.backend
    create, destroy, rotate = (
        backend.create_root_key,
        backend.destroy_root_key,
        backend.rotate_root_key,
    )

    def create_root_key(
        purpose: RootKeyPurpose, key_ref: str | None = None, *, generation: int = 0
    ) -> str:
        point(f"before-create-{purpose}")
        ref = create(purpose, key_ref, generation=generation)
        point(f"after-create-{purpose}")
        return ref

    def destroy_root_key(key_ref: str):  # type: ignore[no-untyped-def]
        point("before-destroy")
        evidence = destroy(key_ref)
        point("after-destroy")
        return evidence

    def rotate_root_key(  # type: ignore[no-untyped-def]
        key_ref: str, purpose: RootKeyPurpose, new_ref: str | None = None, *, generation: int = 0
    ):
        point("before-rotate")
        result = rotate(key_ref, purpose, new_ref, generation=generation)
        point("after-rotate")
        return result

    store = custody.store
    transaction = store.transaction

    @contextmanager
    def instrumented(*, write: bool = True) -> Iterator[KeyTreeNodes]:
        # A commit is named by what it holds: a batch's intent (its journal entry), a root
        # named before it is made (a plan), or anything else.
        what: list[str] = []
        with transaction(write=write) as nodes:
            add_journal, plan_root = nodes.add_journal, nodes.plan_root

            def journalled(entry: JournalEntry) -> None:
                what.append("intent")
                add_journal(entry)

            def planned(plan: RootPlan) -> None:
                what.append("plan")
                plan_root(plan)

            nodes.add_journal = journalled  # type: ignore[method-assign]
            nodes.plan_root = planned  # type: ignore[method-assign]
            yield nodes
        if write:
            point("after-commit" + "".join(f"-{w}" for w in dict.fromkeys(what)))

    backend.create_root_key = create_root_key  # type: ignore[method-assign]
    backend.destroy_root_key = destroy_root_key  # type: ignore[method-assign]
    backend.rotate_root_key = rotate_root_key  # type: ignore[method-assign]
    store.transaction = instrumented  # type: ignore[method-assign]
    if kill_at == -2:
        print("READY", flush=True)
    custody.forget(ids)
    print("DONE", flush=True)
    node.close()


if __name__ == "__main__":
    main()
