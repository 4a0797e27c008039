// Proof of Forgetting verifier (spec oblivio.pof.v1, DESIGN.md §9, §15) for the browser.
//
// A port of src/oblivio/core/pof.py that runs on WebCrypto alone (Ed25519, SHA-256) with
// RFC 8785 (JCS) written out below: no server call, no library. It makes exactly the checks of
// the Python verifier, in the same order, and a failure names the link that `oblivio verify`
// names (input, artifact_id, checkpoint, map_root, map_root_inclusion, forget_event,
// log_inclusion, record, smt_proof, destruction_receipt; proofs[i].LINK inside a bundle).
// tests/vectors/pof/ holds the proofs both verifiers are run over (tests/core/test_pof_vectors.py
// and tests/interfaces/test_console_browser.py), each with the result both must give.
//
// Values are parsed strictly as Python's json module does for oblivio (duplicate keys refused),
// and typed as Python would type them: integers are numbers (BigInt beyond 2^53), numbers
// written with a fraction or an exponent are PyFloat, so that "an integer" means what it means
// to the Python verifier.

export const POF_TYPE = "oblivio.pof.v1";
export const BUNDLE_TYPE = "oblivio.pof-bundle.v1";
const RECEIPT_TYPE = "oblivio.destruction.v1";
const BACKENDS = ["software", "pkcs11", "threshold"];
const FIELDS = [
  "type", "artifact_id", "record", "smt_proof", "checkpoint", "map_root",
  "map_root_inclusion", "forget_event", "log_inclusion", "destruction_receipt",
];
const ED25519 = 0x01;
const SIGNATURE_PREFIX = "\u2014 ";
const MAX_SIGNATURES = 100;
const KEY_BITS = 256;
const EMPTY = new Uint8Array(32);
const SAFE_INT = 2 ** 53 - 1;

// -- errors: who is at fault, as in core/pof.py -------------------------------------------------

/** The proof or the key cannot be used at all (ProofInputError): reported as link "input". */
export class ProofInputError extends Error {
  constructor(message) {
    super(message);
    this.link = "input";
  }
}

/** One link of the proof does not hold (ProofLinkError); `link` names it. */
export class ProofLinkError extends Error {
  constructor(link, detail) {
    super(`${link}: ${detail}`);
    this.link = link;
    this.detail = detail;
  }
}

/** A lower-level check failed (VerificationError); the caller names the link. */
class Invalid extends Error {}

// -- values typed as Python types them --------------------------------------------------------

/** A JSON number written with a fraction or exponent: a Python float, never an int. */
export class PyFloat {
  constructor(value) {
    this.value = value;
  }
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof PyFloat);
const isInt = (v) => (typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint";
const isStr = (v) => typeof v === "string";
const keysOf = (o) => Object.keys(o);
const get = (o, k) => (Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined);
const sameKeys = (o, names) => {
  const keys = keysOf(o);
  return keys.length === names.length && names.every((n) => Object.prototype.hasOwnProperty.call(o, n));
};

function numeric(v) {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return v;
  if (v instanceof PyFloat) return v.value;
  return undefined;
}

/** Python's == on parsed JSON values (True == 1 == 1.0, dicts by items, lists in order). */
export function pyEqual(a, b) {
  const na = numeric(a);
  const nb = numeric(b);
  if (na !== undefined || nb !== undefined) {
    if (na === undefined || nb === undefined) return false;
    // eslint-disable-next-line eqeqeq
    return na == nb;
  }
  if (a === null || b === null) return a === b;
  if (isStr(a) || isStr(b)) return a === b;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => pyEqual(item, b[i]));
  }
  const ka = keysOf(a);
  if (ka.length !== keysOf(b).length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && pyEqual(a[k], b[k]));
}

function pyRepr(v) {
  if (v === undefined || v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (v instanceof PyFloat) return String(v.value);
  if (isStr(v)) return `'${v}'`;
  if (isInt(v)) return String(v);
  return jcsOrNone(v);
}

function pyStr(v) {
  return isStr(v) ? v : pyRepr(v);
}

function jcsOrNone(v) {
  try {
    return jcsText(v);
  } catch {
    return "<value>";
  }
}

// -- strict JSON (Python's json.loads with oblivio's hooks) ----------------------------------

/** Parse JSON text strictly: no duplicate keys, no NaN/Infinity, no BOM, no control
 * characters in strings. Throws ProofInputError("input: …"). */
export function parseJson(text) {
  let i = 0;
  let depth = 0;
  const fail = (why) => {
    throw new ProofInputError(`input: invalid JSON: ${why} at character ${i}`);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i += 1;
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === "{") return object();
    if (c === "[") return array();
    if (c === '"') return string();
    if (c === "t" && text.startsWith("true", i)) { i += 4; return true; }
    if (c === "f" && text.startsWith("false", i)) { i += 5; return false; }
    if (c === "n" && text.startsWith("null", i)) { i += 4; return null; }
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    return fail("expected a value");
  };
  const nest = () => {
    depth += 1;
    if (depth > 900) fail("nested too deeply");
  };
  const object = () => {
    nest();
    i += 1;
    const out = Object.create(null);
    ws();
    if (text[i] === "}") { i += 1; depth -= 1; return out; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail("expected a property name in double quotes");
      const key = string();
      if (Object.prototype.hasOwnProperty.call(out, key)) fail(`duplicate object key '${key}'`);
      ws();
      if (text[i] !== ":") fail("expected ':'");
      i += 1;
      out[key] = value();
      ws();
      if (text[i] === ",") { i += 1; continue; }
      if (text[i] === "}") { i += 1; depth -= 1; return out; }
      fail("expected ',' or '}'");
    }
  };
  const array = () => {
    nest();
    i += 1;
    const out = [];
    ws();
    if (text[i] === "]") { i += 1; depth -= 1; return out; }
    for (;;) {
      out.push(value());
      ws();
      if (text[i] === ",") { i += 1; continue; }
      if (text[i] === "]") { i += 1; depth -= 1; return out; }
      fail("expected ',' or ']'");
    }
  };
  const string = () => {
    i += 1;
    let out = "";
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text[i];
      if (c === '"') { i += 1; return out; }
      if (c.charCodeAt(0) < 0x20) fail("invalid control character in string");
      if (c !== "\\") { out += c; i += 1; continue; }
      const e = text[i + 1];
      const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
      if (simple !== undefined) { out += simple; i += 2; continue; }
      if (e !== "u" || !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail("invalid escape");
      out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
      i += 6;
    }
  };
  const number = () => {
    const m = /^-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/.exec(text.slice(i));
    if (!m) fail("invalid number");
    i += m[0].length;
    if (m[1] !== undefined || m[2] !== undefined) return new PyFloat(Number(m[0]));
    const n = Number(m[0]);
    return Math.abs(n) <= SAFE_INT ? n : BigInt(m[0]);
  };
  const result = value();
  ws();
  if (i !== text.length) fail("extra data");
  return result;
}

// -- RFC 8785 (JCS) --------------------------------------------------------------------------

function jcsNumber(v) {
  if (typeof v === "bigint") throw new ProofInputError("input: an integer beyond 2^53 cannot be canonicalised");
  const n = v instanceof PyFloat ? v.value : v;
  if (!Number.isFinite(n)) throw new ProofInputError("input: a non-finite number cannot be canonicalised");
  if (!(v instanceof PyFloat) && Math.abs(n) > SAFE_INT) {
    throw new ProofInputError("input: an integer beyond 2^53 cannot be canonicalised");
  }
  return JSON.stringify(n); // ECMAScript Number serialisation: exactly what RFC 8785 §3.2.2.3 specifies
}

function jcsString(s) {
  for (let k = 0; k < s.length; k += 1) {
    const c = s.charCodeAt(k);
    if (c >= 0xd800 && c <= 0xdfff) {
      const pair = c <= 0xdbff && k + 1 < s.length && s.charCodeAt(k + 1) >= 0xdc00 && s.charCodeAt(k + 1) <= 0xdfff;
      if (!pair) throw new ProofInputError("input: a lone surrogate cannot be canonicalised");
      k += 1;
    }
  }
  return JSON.stringify(s); // the escapes of RFC 8785 §3.2.2.2
}

/** The RFC 8785 text of a parsed value (properties sorted by UTF-16 code units). */
export function jcsText(v) {
  if (v === null) return "null";
  if (v === true) return "true";
  if (v === false) return "false";
  if (isStr(v)) return jcsString(v);
  if (typeof v === "number" || typeof v === "bigint" || v instanceof PyFloat) return jcsNumber(v);
  if (Array.isArray(v)) return `[${v.map(jcsText).join(",")}]`;
  const keys = keysOf(v).sort();
  return `{${keys.map((k) => `${jcsString(k)}:${jcsText(v[k])}`).join(",")}}`;
}

const utf8 = (s) => new TextEncoder().encode(s);
const jcs = (v) => utf8(jcsText(v));

// -- bytes, hex, base64 ----------------------------------------------------------------------

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const bytesEqual = (a, b) => a.length === b.length && a.every((x, k) => x === b[k]);

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

/** Python's bytes.fromhex: pairs of hex digits of either case, ASCII whitespace between. */
function pyFromHex(text) {
  const out = [];
  let k = 0;
  while (k < text.length) {
    if (" \t\n\r\v\f".includes(text[k])) { k += 1; continue; }
    const pair = text.slice(k, k + 2);
    if (!/^[0-9a-fA-F]{2}$/.test(pair)) throw new Invalid(`non-hexadecimal number found in fromhex() arg at position ${k}`);
    out.push(parseInt(pair, 16));
    k += 2;
  }
  return new Uint8Array(out);
}

/** core.hashing.parse_hex_digest: 64 lower-case hex characters. */
function parseHexDigest(text, what) {
  if (!isStr(text) || text.length !== 64 || text !== text.toLowerCase()) {
    throw new Invalid(`${what}: expected 64 lower-case hex characters, got ${pyRepr(text)}`);
  }
  try {
    const bytes = pyFromHex(text);
    if (bytes.length !== 32) throw new Invalid("length");
    return bytes;
  } catch {
    throw new Invalid(`${what}: expected 64 lower-case hex characters, got ${pyRepr(text)}`);
  }
}

function b64Encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function b64Bytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Standard padded base64, canonical only (core.encoding.b64_std_decode). */
function b64StdDecode(text) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Invalid("invalid base64");
  let bytes;
  try {
    bytes = b64Bytes(text);
  } catch {
    throw new Invalid("invalid base64");
  }
  if (b64Encode(bytes) !== text) throw new Invalid("non-canonical base64 encoding");
  return bytes;
}

/** Unpadded base64url, canonical only (core.encoding.b64url_decode). */
function b64UrlDecode(text) {
  if (!isStr(text) || !/^[A-Za-z0-9+/_-]*$/.test(text) || text.length % 4 === 1) {
    throw new Invalid("expected unpadded base64url text");
  }
  const std = text.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = b64Bytes(std + "=".repeat((4 - (std.length % 4)) % 4));
  const again = b64Encode(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  if (again !== text) throw new Invalid("non-canonical base64url encoding");
  return bytes;
}

// -- Ed25519 (WebCrypto) --------------------------------------------------------------------------

async function ed25519Verify(publicKey, signature, message) {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  try {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch {
    return false;
  }
}

// -- C2SP signed notes and checkpoints (core/note.py) ---------------------------------------

const PY_SPACE = /[\s\x1c-\x1f\x85]/u;
const isValidKeyName = (name) => name.length > 0 && !name.includes("+") && !PY_SPACE.test(name.replace(/\ufeff/g, "x"));
// str.isprintable(): no character of the categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs but ' '.
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

/** A C2SP verifier key name+hex8+base64(0x01 || key), as core.note.parse_verifier_key. */
async function parseVerifierKey(vkey) {
  const plus = vkey.indexOf("+");
  const name = plus < 0 ? vkey : vkey.slice(0, plus);
  const rest = plus < 0 ? "" : vkey.slice(plus + 1);
  const plus2 = rest.indexOf("+");
  const hashHex = plus2 < 0 ? rest : rest.slice(0, plus2);
  const keyB64 = plus2 < 0 ? "" : rest.slice(plus2 + 1);
  let key;
  try {
    key = b64StdDecode(keyB64);
  } catch {
    key = new Uint8Array();
  }
  if (hashHex.length !== 8 || !/^[0-9a-fA-F]{8}$/.test(hashHex) || !key.length || !isValidKeyName(name)) {
    throw new Invalid(`verifier key: malformed verifier id in '${vkey}'`);
  }
  const keyHash = pyFromHex(hashHex);
  const algorithm = key[0];
  if (algorithm !== ED25519 && algorithm !== 0x02) {
    throw new Invalid(`verifier key: unknown algorithm 0x${algorithm.toString(16).padStart(2, "0")}`);
  }
  if (algorithm !== ED25519) {
    // core/pof.py refuses every other algorithm: oblivio nodes sign with Ed25519 keys.
    return { name, keyHash, algorithm, publicKey: key.slice(1) };
  }
  const expected = (await sha256(utf8(name), utf8("\n"), key)).slice(0, 4);
  if (!bytesEqual(keyHash, expected)) {
    throw new Invalid(`verifier key: expected key hash ${toHex(expected)}, got ${toHex(keyHash)}`);
  }
  if (key.length - 1 !== 32) throw new Invalid(`verifier key: Ed25519 key must be 32 bytes, got ${key.length - 1}`);
  return { name, keyHash, algorithm, publicKey: key.slice(1) };
}

const malformed = (why) => new Invalid(`signed note: malformed note: ${why}`);

function parseSignatureLine(raw) {
  if (!raw.startsWith(SIGNATURE_PREFIX)) throw malformed("a signature line does not start with an em dash and a space");
  const rest = raw.slice(SIGNATURE_PREFIX.length);
  const space = rest.indexOf(" ");
  const name = space < 0 ? rest : rest.slice(0, space);
  const b64 = space < 0 ? "" : rest.slice(space + 1);
  let sig;
  try {
    sig = b64StdDecode(b64);
  } catch {
    sig = new Uint8Array();
  }
  if (!isValidKeyName(name) || !b64 || sig.length < 5) throw malformed(`bad signature line for '${name}'`);
  return { name, keyHash: sig.slice(0, 4), signature: sig.slice(4) };
}

/** core.note.open_note with the node's key as the one verifier: the note's text. */
async function openNote(note, verifier) {
  for (const ch of note) {
    if (ch.charCodeAt(0) < 0x20 && ch !== "\n") throw malformed("control character");
  }
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw malformed("no blank line before the signatures");
  const text = note.slice(0, split + 1);
  const sigs = note.slice(split + 2);
  if (!sigs || !sigs.endsWith("\n")) throw malformed("signature block does not end in a newline");
  const lines = sigs.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw malformed(`more than ${MAX_SIGNATURES} signatures`);
  let verified = false;
  for (const raw of lines) {
    const line = parseSignatureLine(raw);
    if (line.name !== verifier.name || !bytesEqual(line.keyHash, verifier.keyHash)) continue; // unknown key: ignored
    if (verified) continue; // this key was seen already
    if (!(await ed25519Verify(verifier.publicKey, line.signature, utf8(text)))) {
      throw new Invalid(`signed note: invalid signature for key ${verifier.name}+${toHex(verifier.keyHash)}`);
    }
    verified = true;
  }
  if (!verified) throw new Invalid("signed note: no verifiable signatures");
  return text;
}

/** core.note.parse_checkpoint: origin, decimal size, base64 root; no extension lines. */
function parseCheckpoint(text) {
  if (!text.endsWith("\n")) throw new Invalid("checkpoint: text must end in a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new Invalid(`checkpoint: expected 3 lines, got ${lines.length}`);
  if (lines.length > 3) throw new Invalid(`checkpoint: expected no extension lines, got ${lines.length - 3} after the root`);
  const [origin, sizeText, rootText] = lines;
  if (!origin) throw new Invalid("checkpoint: origin line is empty");
  if (!/^[0-9]+$/.test(sizeText) || (sizeText[0] === "0" && sizeText !== "0")) {
    throw new Invalid(`checkpoint: size must be a decimal integer, got '${sizeText}'`);
  }
  let root;
  try {
    root = b64StdDecode(rootText);
  } catch {
    throw new Invalid(`checkpoint: root is not base64: '${rootText}'`);
  }
  if (root.length !== 32) throw new Invalid(`checkpoint: root must be 32 bytes, got ${root.length}`);
  if (NOT_PRINTABLE.test(origin)) throw new Invalid(`checkpoint: origin must be one printable line, got '${origin}'`);
  const big = BigInt(sizeText);
  const size = big <= BigInt(SAFE_INT) ? Number(big) : big;
  return { origin, size, root };
}

// -- RFC 9162 log inclusion (core/merkle_log.py) ----------------------------------------------

const logLeafHash = (entry) => sha256(new Uint8Array([0]), entry);
const logNodeHash = (l, r) => sha256(new Uint8Array([1]), l, r);

function parseInclusion(data) {
  const what = "log inclusion proof";
  if (!isObject(data)) throw new Invalid(`${what}: expected a JSON object`);
  if (!sameKeys(data, ["leaf_index", "tree_size", "path"])) throw new Invalid(`${what}: expected fields ['leaf_index', 'path', 'tree_size']`);
  for (const field of ["leaf_index", "tree_size"]) {
    const v = data[field];
    if (!isInt(v) || v < 0) throw new Invalid(`${what}: '${field}' must be a non-negative integer, got ${pyRepr(v)}`);
  }
  const path = data.path;
  if (!Array.isArray(path) || !path.every(isStr)) throw new Invalid(`${what}: 'path' must be a list of hex hashes`);
  return { leafIndex: data.leaf_index, treeSize: data.tree_size, path: path.map((p) => parseHexDigest(p, `${what} path`)) };
}

async function verifyLogInclusion(proof, leaf, root) {
  const index = BigInt(proof.leafIndex);
  const size = BigInt(proof.treeSize);
  if (!(index >= 0n && index < size)) throw new Invalid(`log inclusion: leaf index ${index} is outside a tree of size ${size}`);
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof.path) {
    if (sn === 0n) throw new Invalid(`log inclusion: proof too long for index ${index} in size ${size}`);
    if (fn & 1n || fn === sn) {
      r = await logNodeHash(p, r);
      while (!(fn & 1n) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await logNodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Invalid(`log inclusion: proof too short for index ${index} in size ${size}`);
  if (!bytesEqual(r, root)) throw new Invalid(`log inclusion of leaf ${index} in size ${size}: root: expected ${toHex(root)}, got ${toHex(r)}`);
}

// -- oblivio-smt-v1 proofs (core/smt.py) ------------------------------------------------------

function parseSmtProof(data) {
  const what = "SMT proof";
  if (!isObject(data) || !sameKeys(data, ["depth", "bitmap", "siblings", "terminal"])) {
    throw new Invalid(`${what}: expected fields ['bitmap', 'depth', 'siblings', 'terminal']`);
  }
  const depth = data.depth;
  if (typeof depth !== "number" || !Number.isInteger(depth) || depth < 0 || depth > KEY_BITS) {
    throw new Invalid(`${what}: depth must be an integer 0..256, got ${pyRepr(depth)}`);
  }
  const bitmapHex = data.bitmap;
  const bitmapBytes = Math.floor((depth + 7) / 8);
  if (!isStr(bitmapHex) || bitmapHex.length !== 2 * bitmapBytes || bitmapHex !== bitmapHex.toLowerCase()) {
    throw new Invalid(`${what}: bitmap must be ${bitmapBytes} bytes of lower-case hex, got ${pyRepr(bitmapHex)}`);
  }
  const bitmap = pyFromHex(bitmapHex);
  const siblingsRaw = data.siblings;
  if (!Array.isArray(siblingsRaw) || !siblingsRaw.every(isStr)) throw new Invalid(`${what}: siblings must be a list of hex hashes`);
  const siblings = siblingsRaw.map((s) => parseHexDigest(s, `${what} sibling`));
  const terminal = data.terminal;
  if (isObject(terminal) && pyEqual(terminal, { empty: true })) {
    return { depth, bitmap, siblings, key: null, valueHash: null };
  }
  if (isObject(terminal) && sameKeys(terminal, ["leaf"]) && isObject(terminal.leaf) && sameKeys(terminal.leaf, ["key", "value_hash"])
      && isStr(terminal.leaf.key) && isStr(terminal.leaf.value_hash)) {
    return {
      depth, bitmap, siblings,
      key: parseHexDigest(terminal.leaf.key, `${what} terminal key`),
      valueHash: parseHexDigest(terminal.leaf.value_hash, `${what} terminal value_hash`),
    };
  }
  throw new Invalid(`${what}: terminal must be {"empty": true} or {"leaf": {"key", "value_hash"}}`);
}

const bigOf = (bytes) => bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
const bitCount = (n) => { let c = 0; for (let m = n; m; m >>= 1n) c += Number(m & 1n); return c; };

async function smtComputedRoot(proof, key) {
  const depth = proof.depth;
  if (proof.bitmap.length !== Math.floor((depth + 7) / 8)) throw new Invalid("SMT proof: bitmap length");
  let bits = bigOf(proof.bitmap);
  const pad = BigInt((8 - (depth % 8)) % 8);
  if (bits & ((1n << pad) - 1n)) throw new Invalid("SMT proof: bitmap padding bits must be zero");
  bits >>= pad;
  if (bitCount(bits) !== proof.siblings.length) throw new Invalid(`SMT proof: bitmap has ${bitCount(bits)} non-empty siblings, got ${proof.siblings.length} sibling hashes`);
  if (depth > 0 && !(bits & 1n)) throw new Invalid(`SMT proof: the sibling at depth ${depth - 1} is EMPTY, so the terminal at depth ${depth} is not where compaction puts it`);
  const kint = bigOf(key);
  let h;
  if (proof.key === null) {
    h = EMPTY;
  } else {
    const shift = BigInt(KEY_BITS - depth);
    if (depth && bigOf(proof.key) >> shift !== kint >> shift) {
      throw new Invalid(`SMT proof: terminal leaf ${toHex(proof.key)} does not share the first ${depth} bits of key ${toHex(key)}`);
    }
    h = await sha256(new Uint8Array([0]), proof.key, proof.valueHash);
  }
  let index = proof.siblings.length;
  for (let i = depth - 1; i >= 0; i -= 1) {
    let sibling;
    if ((bits >> BigInt(depth - 1 - i)) & 1n) {
      index -= 1;
      sibling = proof.siblings[index];
      if (bytesEqual(sibling, EMPTY)) throw new Invalid(`SMT proof: sibling at depth ${i} is listed but is EMPTY`);
    } else {
      sibling = EMPTY;
    }
    h = (kint >> BigInt(KEY_BITS - 1 - i)) & 1n
      ? await sha256(new Uint8Array([1]), sibling, h)
      : await sha256(new Uint8Array([1]), h, sibling);
  }
  return h;
}

async function smtVerifyInclusion(root, key, valueHash, proof) {
  const what = `SMT inclusion of key ${toHex(key)}`;
  if (proof.key === null) throw new Invalid(`${what}: expected a leaf terminal, got EMPTY`);
  if (!bytesEqual(proof.key, key)) throw new Invalid(`${what}: expected terminal key ${toHex(key)}, got ${toHex(proof.key)}`);
  if (!bytesEqual(proof.valueHash, valueHash)) throw new Invalid(`${what}: expected value hash ${toHex(valueHash)}, got ${toHex(proof.valueHash)}`);
  const computed = await smtComputedRoot(proof, key);
  if (!bytesEqual(root, computed)) throw new Invalid(`${what}: expected root ${toHex(root)}, got ${toHex(computed)}`);
}

// -- destruction receipts (core/receipts.py) ----------------------------------------------------

const TIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?(Z|[+-]([0-9]{2}):([0-9]{2}))$/;

/** core.identifiers.parse_time: RFC 3339 with an offset, a date and time that exist. */
function checkTime(text) {
  const m = isStr(text) ? TIME.exec(text) : null;
  if (!m) throw new Invalid(`time: expected RFC 3339 such as 2026-11-22T10:00:00.000Z, got ${pyRepr(text)}`);
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  const offsetOk = m[8] === "Z" || Number(m[9]) * 60 + Number(m[10]) < 24 * 60;
  if (year < 1 || !days || day < 1 || day > days || hour > 23 || minute > 59 || second > 59 || !offsetOk || Number(m[10] || 0) > 59) {
    throw new Invalid(`time: ${text} is not a valid time`);
  }
}

async function verifyDestructionReceipt(receipt, nodePublicKey) {
  // Step 1: the shape of oblivio.destruction.v1.
  const step1 = (why) => new Invalid(`step 1: destruction receipt: ${why}`);
  if (!isObject(receipt)) throw step1("expected a JSON object");
  if (!sameKeys(receipt, ["type", "backend", "key_ref", "epoch", "destroyed_at", "evidence", "signatures"])) throw step1("unexpected fields");
  if (!pyEqual(receipt.type, RECEIPT_TYPE)) throw step1(`expected type ${RECEIPT_TYPE}`);
  if (!BACKENDS.some((b) => pyEqual(receipt.backend, b))) throw step1(`expected backend in ${BACKENDS.join(", ")}`);
  for (const name of ["key_ref", "evidence"]) if (!isObject(receipt[name])) throw step1(`${name} must be an object`);
  if (!isInt(receipt.epoch) || receipt.epoch < 0) throw step1(`epoch must be >= 0, got ${pyRepr(receipt.epoch)}`);
  try {
    checkTime(receipt.destroyed_at);
  } catch (e) {
    throw new Invalid(`step 1: ${e.message}`);
  }
  const signatures = receipt.signatures;
  if (!Array.isArray(signatures) || !signatures.every((s) => isObject(s) && sameKeys(s, ["key_id", "signature_b64"]) && isStr(s.key_id) && isStr(s.signature_b64))) {
    throw step1("signatures must be a list of {key_id, signature_b64}");
  }
  const keyId = get(receipt.key_ref, "key_id");
  if (!isStr(keyId) || !keyId) throw new Invalid("step 1: key_ref.key_id must be a non-empty string");
  // Step 2: every signature is the node's, over the JCS body without signatures.
  const body = { type: RECEIPT_TYPE, backend: receipt.backend, key_ref: receipt.key_ref, epoch: receipt.epoch, destroyed_at: receipt.destroyed_at, evidence: receipt.evidence };
  const message = jcs(body);
  const nodeKeyId = toHex(await sha256(nodePublicKey));
  if (!signatures.length) throw new Invalid("step 2: the receipt carries no signature");
  for (const s of signatures) {
    if (s.key_id !== nodeKeyId) throw new Invalid(`step 2: signed by ${s.key_id}, expected the node ${nodeKeyId} or a custodian`);
    let signature;
    try {
      signature = b64UrlDecode(s.signature_b64);
    } catch {
      throw new Invalid("step 2: receipt: signature_b64 is not base64url");
    }
    if (!(await ed25519Verify(nodePublicKey, signature, message))) throw new Invalid(`step 2: receipt: signature by ${nodeKeyId} does not verify`);
  }
  // Step 3: a threshold receipt needs the custodians' keys, which a PoF verifier is not given.
  if (pyEqual(receipt.backend, "threshold")) throw new Invalid("step 3: a threshold receipt needs the custodians' keys");
  return receipt.backend;
}

// -- the proof, link by link (core/pof.py) -----------------------------------------------------

async function link(name, check) {
  try {
    return await check();
  } catch (e) {
    if (e instanceof Invalid) throw new ProofLinkError(name, e.message);
    throw e;
  }
}

function objectOf(value, name) {
  if (!isObject(value)) throw new ProofLinkError(name, "expected a JSON object");
  return value;
}

async function verifyLogEntry(entry, inclusion, checkpoint, name) {
  // eslint-disable-next-line eqeqeq
  if (inclusion.treeSize != checkpoint.size) {
    throw new ProofLinkError(name, `expected an inclusion proof at the checkpoint size ${checkpoint.size}, got ${inclusion.treeSize}`);
  }
  const leaf = await logLeafHash(jcs(entry));
  await link(name, async () => {
    try {
      await verifyLogInclusion(inclusion, leaf, checkpoint.root);
    } catch (e) {
      if (e instanceof Invalid) throw new Invalid(`not in the log under the checkpoint: ${e.message}`);
      throw e;
    }
  });
}

const entryHash = (entry) => sha256(jcs(entry));

/** The proven statement in one sentence, as ProvenForgetting.statement() words it. */
export function statement(p) {
  const evidence = p.destruction_backend ? `; key destruction attested by the ${p.destruction_backend} backend` : "";
  const caps = p.capabilities;
  const what = caps.includes("decrypt") && caps.includes("recover")
    ? "no capability to decrypt"
    : `no ${caps.join(", ")} capability for`;
  return `as of checkpoint ${p.checkpoint_size} (epoch ${p.epoch}), node ${p.node} holds ${what} artifact ${p.artifact_id} (forgotten: ${caps.join(", ")}): level ${p.level} (forget event ${p.forget_event_id})${evidence}`;
}

/** Verify one parsed oblivio.pof.v1 document against the node's verifier key. Resolves to what
 * it proves; rejects with ProofInputError or ProofLinkError naming the first failing link. */
export async function verifyProof(proof, verifierKey) {
  let verifier;
  try {
    verifier = await parseVerifierKey(verifierKey);
  } catch (e) {
    if (e instanceof Invalid) throw new ProofInputError(`verifier key unusable: ${e.message}`);
    throw e;
  }
  if (verifier.algorithm !== ED25519) throw new ProofInputError("verifier key: oblivio nodes sign with Ed25519 keys");
  if (!isObject(proof) || !sameKeys(proof, FIELDS) || !pyEqual(get(proof, "type"), POF_TYPE)) {
    throw new ProofInputError(`input: expected an ${POF_TYPE} object with fields ${[...FIELDS].sort().join(", ")}`);
  }
  // artifact_id
  const artifactId = proof.artifact_id;
  if (!isStr(artifactId)) throw new ProofLinkError("artifact_id", "expected a 64-hex artifact id");
  const key = await link("artifact_id", async () => sha256(parseHexDigest(artifactId, "artifact id")));
  // checkpoint
  const note = proof.checkpoint;
  if (!isStr(note)) throw new ProofLinkError("checkpoint", "expected the signed note as a string");
  const checkpoint = await link("checkpoint", async () => {
    const cp = parseCheckpoint(await openNote(note, verifier));
    if (cp.origin !== verifier.name) throw new Invalid(`checkpoint: expected origin '${verifier.name}', got '${cp.origin}'`);
    return cp;
  });
  if (checkpoint.size < 1) throw new ProofLinkError("checkpoint", "an empty log proves nothing");
  // map_root
  const mapRoot = objectOf(proof.map_root, "map_root");
  if (!pyEqual(get(mapRoot, "type"), "map_root")) throw new ProofLinkError("map_root", `expected type 'map_root', got ${pyRepr(get(mapRoot, "type"))}`);
  const mapInclusion = await link("map_root_inclusion", async () => parseInclusion(proof.map_root_inclusion));
  const last = typeof checkpoint.size === "bigint" ? checkpoint.size - 1n : checkpoint.size - 1;
  // eslint-disable-next-line eqeqeq
  if (mapInclusion.leafIndex != last) throw new ProofLinkError("map_root", `expected the last entry (index ${last}), got ${mapInclusion.leafIndex}`);
  await verifyLogEntry(mapRoot, mapInclusion, checkpoint, "map_root");
  const smtRootHex = get(mapRoot, "smt_root");
  const epoch = get(mapRoot, "epoch");
  if (!isStr(smtRootHex) || smtRootHex.length !== 64 || !isInt(epoch)) throw new ProofLinkError("map_root", "expected a 64-hex smt_root and an integer epoch");
  const smtRoot = await link("map_root", async () => pyFromHex(smtRootHex));
  // forget_event
  const event = objectOf(proof.forget_event, "forget_event");
  const eventInclusion = await link("log_inclusion", async () => parseInclusion(proof.log_inclusion));
  await verifyLogEntry(event, eventInclusion, checkpoint, "forget_event");
  const artifacts = get(event, "artifacts");
  if (!pyEqual(get(event, "type"), "forget") || !Array.isArray(artifacts)) throw new ProofLinkError("forget_event", "expected a forget event with a list of artifacts");
  if (!artifacts.some((a) => pyEqual(a, artifactId))) throw new ProofLinkError("forget_event", `does not name artifact ${artifactId}`);
  if (!pyEqual(get(event, "level"), 2)) throw new ProofLinkError("forget_event", `expected level 2, got ${pyRepr(get(event, "level"))}`);
  // record, then the SMT leaf
  const record = objectOf(proof.record, "record");
  const receipt = proof.destruction_receipt;
  const receiptHash = receipt === null ? null : await entryHash(objectOf(receipt, "destruction_receipt"));
  const expected = {
    state: "TOMBSTONE",
    forget_event_hash: toHex(await entryHash(event)),
    destruction_receipt_hash: receiptHash === null ? null : toHex(receiptHash),
    level: 2,
  };
  if (!pyEqual(record, expected)) throw new ProofLinkError("record", `expected ${jcsText(expected)}, got ${jcsOrNone(record)}`);
  const valueHash = await sha256(jcs(record));
  await link("smt_proof", async () => smtVerifyInclusion(smtRoot, key, valueHash, parseSmtProof(proof.smt_proof)));
  // destruction_receipt
  const backend = receipt === null ? null : await link("destruction_receipt", async () => verifyDestructionReceipt(parseJson(jcsText(receipt)), verifier.publicKey));
  const capabilities = get(event, "capabilities");
  if (!Array.isArray(capabilities) || !capabilities.length) throw new ProofLinkError("forget_event", "expected a non-empty list of capabilities");
  const proven = {
    node: checkpoint.origin,
    artifact_id: artifactId,
    checkpoint_size: Number(checkpoint.size),
    epoch: Number(epoch),
    level: 2,
    forget_event_id: pyStr(get(event, "id")),
    destruction_backend: backend,
    capabilities: capabilities.map(pyStr),
  };
  return { ...proven, statement: statement(proven) };
}

/** Verify a proof or a bundle (its proofs must share one checkpoint), as verify_document. */
export async function verifyParsedDocument(document, verifierKey) {
  if (isObject(document) && pyEqual(get(document, "type"), BUNDLE_TYPE)) {
    const proofs = get(document, "proofs");
    if (!sameKeys(document, ["type", "proofs"]) || !Array.isArray(proofs) || !proofs.length) {
      throw new ProofInputError("input: a bundle needs a non-empty list of proofs");
    }
    const checkpointOf = (p) => (isObject(p) ? get(p, "checkpoint") : undefined);
    const checkpoints = new Set(proofs.map((p) => {
      const c = checkpointOf(p);
      return c === undefined || c === null ? "None" : jcsOrNone(c);
    }));
    if (checkpoints.size !== 1) throw new ProofLinkError("checkpoint", "the bundle's proofs are under different checkpoints");
    const results = [];
    for (const [index, item] of proofs.entries()) {
      if (!isObject(item)) throw new ProofInputError(`input: bundle proof ${index} is not an object`);
      try {
        results.push(await verifyProof(item, verifierKey));
      } catch (e) {
        if (e instanceof ProofLinkError) throw new ProofLinkError(`proofs[${index}].${e.link}`, e.detail);
        throw e;
      }
    }
    return results;
  }
  return [await verifyProof(document, verifierKey)];
}

/** Verify a proof file's bytes (or text): {valid: true, proven: [...]} or {valid: false, link,
 * error}, the link named as `oblivio verify` names it ("input" for an unusable document). */
export async function verifyDocument(data, verifierKey) {
  try {
    let text;
    try {
      text = typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data);
    } catch {
      throw new ProofInputError("input: invalid JSON: not UTF-8");
    }
    const document = parseJson(text);
    if (!isObject(document)) throw new ProofInputError("input: expected a JSON object");
    return { valid: true, proven: await verifyParsedDocument(document, verifierKey) };
  } catch (e) {
    if (e instanceof ProofLinkError || e instanceof ProofInputError) {
      return { valid: false, link: e.link, error: e.message };
    }
    return { valid: false, link: "input", error: `input: ${e && e.message ? e.message : String(e)}` };
  }
}
