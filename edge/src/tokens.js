// Token format and hashing, as in tokenmanager/tokens/codec.py: `ntk_` + 43 base62 characters
// + 6 base62 characters of CRC32 over those 43. Pure functions; the checksum lets the Worker
// refuse a typo or a guess before any KV read.

export const TOKEN_PREFIX = "ntk_";
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS = 43;
const CHECKSUM_CHARS = 6;
const TOKEN_LENGTH = TOKEN_PREFIX.length + RANDOM_CHARS + CHECKSUM_CHARS;
const BASE62_PATTERN = /^[0-9A-Za-z]+$/;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(text) {
  let crc = 0xffffffff;
  for (let i = 0; i < text.length; i++) {
    crc = CRC_TABLE[(crc ^ text.charCodeAt(i)) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export function encodeBase62(number, width) {
  const digits = [];
  for (let i = 0; i < width; i++) {
    digits.push(BASE62[number % 62]);
    number = Math.floor(number / 62);
  }
  if (number) throw new RangeError("number does not fit in the given width");
  return digits.reverse().join("");
}

/** True if the string is shaped like an `ntk_` token and its checksum matches. */
export function hasValidChecksum(tokenSecret) {
  if (tokenSecret.length !== TOKEN_LENGTH || !tokenSecret.startsWith(TOKEN_PREFIX)) return false;
  const body = tokenSecret.slice(TOKEN_PREFIX.length);
  if (!BASE62_PATTERN.test(body)) return false;
  const expected = encodeBase62(crc32(body.slice(0, RANDOM_CHARS)), CHECKSUM_CHARS);
  return timingSafeEqual(expected, body.slice(RANDOM_CHARS));
}

function timingSafeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** The stored form: SHA-256 hex digest (the seed's `token_hash`). */
export async function hashToken(tokenSecret) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(tokenSecret));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
