// Upstream credentials arrive from KV encrypted with AES-256-GCM under the edge key, a Worker
// secret (`EDGE_KEY`, 32 bytes base64url) that never enters KV. Format:
// `v1.<base64url 12-byte nonce>.<base64url ciphertext+tag>`, with the route's path prefix as
// associated data so a ciphertext cannot be moved to another route.

const keys = new Map();

export function decodeBase64Url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function encodeBase64Url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function importKey(keyText) {
  let key = keys.get(keyText);
  if (key === undefined) {
    const raw = decodeBase64Url(keyText);
    if (raw.length !== 32) throw new Error("EDGE_KEY must be 32 bytes, base64url");
    key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    keys.set(keyText, key);
  }
  return key;
}

// Opened credentials per isolate (sealed value + route -> plaintext), so AES-GCM runs once per
// credential rather than once per call; a re-sealed or changed credential is a new entry.
const opened = new Map();
const MAX_OPENED = 1000;

/** The plaintext; throws if the key or the associated data does not match. */
export async function decryptSecret(keyText, sealed, associated) {
  const cacheKey = `${associated}\n${sealed}`;
  const known = opened.get(cacheKey);
  // Only under the key that opened it: after EDGE_KEY changes, the value is opened again.
  if (known !== undefined && known.keyText === keyText) return known.plaintext;
  const plaintext = await openSecret(keyText, sealed, associated);
  if (opened.size >= MAX_OPENED) opened.clear();
  opened.set(cacheKey, { keyText, plaintext });
  return plaintext;
}

async function openSecret(keyText, sealed, associated) {
  const [version, nonce, ciphertext] = sealed.split(".");
  if (version !== "v1" || !nonce || !ciphertext) throw new Error("unknown sealed secret format");
  const plaintext = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: decodeBase64Url(nonce), additionalData: new TextEncoder().encode(associated) },
    await importKey(keyText),
    decodeBase64Url(ciphertext),
  );
  return new TextDecoder().decode(plaintext);
}

/** The sealed form of `plaintext` (the control plane does this in Python; here for tests). */
export async function encryptSecret(keyText, plaintext, associated) {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: new TextEncoder().encode(associated) },
    await importKey(keyText),
    new TextEncoder().encode(plaintext),
  );
  return `v1.${encodeBase64Url(nonce)}.${encodeBase64Url(new Uint8Array(ciphertext))}`;
}
