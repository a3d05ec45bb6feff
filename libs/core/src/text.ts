/** At most this many characters of a caller's value are echoed back in an error message. */
export const MAX_QUOTED_CHARS = 64;

/**
 * A caller-supplied string as it appears in error messages: JSON-quoted (so control characters
 * are escaped) and cut to {@link MAX_QUOTED_CHARS} characters, with `…` marking the cut.
 */
export function quoteForMessage(value: string): string {
  if (value.length <= MAX_QUOTED_CHARS) return JSON.stringify(value);
  // Slice first so a megabyte-long value costs no more than a short one.
  const head = Array.from(value.slice(0, MAX_QUOTED_CHARS * 2));
  if (head.length <= MAX_QUOTED_CHARS && value.length <= MAX_QUOTED_CHARS * 2) {
    return JSON.stringify(value);
  }
  return JSON.stringify(`${head.slice(0, MAX_QUOTED_CHARS).join("")}…`);
}

/** Number of Unicode code points in `value` (what Postgres counts as characters). */
export function codePointLength(value: string): number {
  let count = 0;
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < value.length) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

/** Number of bytes `value` takes as UTF-8 (lone surrogates count as U+FFFD, as TextEncoder does). */
export function utf8ByteLength(value: string): number {
  let bytes = 0;
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    if (unit < 0x80) {
      bytes += 1;
    } else if (unit < 0x800) {
      bytes += 2;
    } else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < value.length) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else {
        bytes += 3;
      }
    } else {
      bytes += 3;
    }
  }
  return bytes;
}
