// The verify page: a dropped or chosen proof file is read and verified here, in the browser,
// by pof-verify.js. Nothing is sent anywhere (the page's CSP has connect-src 'none').
import { verifyDocument } from "./pof-verify.js";

const zone = document.getElementById("drop-zone");
const input = document.getElementById("proof-file");
const keyInput = document.getElementById("verifier-key");
const result = document.getElementById("verify-result");
const verdict = document.getElementById("verify-verdict");
const fileLine = document.getElementById("verify-file");
const statements = document.getElementById("verify-statements");
const failure = document.getElementById("verify-failure");

async function check(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  result.dataset.state = "checking";
  const outcome = await verifyDocument(bytes, keyInput.value.trim()); // a pasted key may carry a newline
  result.hidden = false;
  result.className = outcome.valid ? "valid" : "invalid";
  fileLine.textContent = `${file.name} (${bytes.length} bytes)`;
  statements.replaceChildren();
  failure.textContent = "";
  if (outcome.valid) {
    verdict.textContent = outcome.proven.length === 1 ? "Proof valid" : `Bundle valid: ${outcome.proven.length} proofs`;
    for (const proven of outcome.proven) {
      const li = document.createElement("li");
      li.textContent = proven.statement;
      statements.append(li);
    }
    result.dataset.link = "";
  } else {
    verdict.textContent = outcome.link === "input" ? "Not a usable proof" : `Proof invalid: failed link ${outcome.link}`;
    failure.textContent = outcome.error;
    result.dataset.link = outcome.link;
  }
  result.dataset.state = outcome.valid ? "valid" : "invalid";
}

input.addEventListener("change", () => {
  if (input.files && input.files[0]) check(input.files[0]);
});
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) check(file);
});
