/** What {@link parseJsonText} found: the value, or the parser's message and where in the text it stopped. */
export type ParsedJson =
  | { ok: true; value: unknown }
  | {
      ok: false;
      /** JSON.parse's message, whole. */
      message: string;
      /** 1-based line of the error, when the message gives its position. */
      line?: number;
      /** 1-based column of the error on that line. */
      column?: number;
      /** The line of text and a caret under the column, when the position is known. */
      excerpt?: string;
    };

/**
 * JSON.parse that says where a syntax error is: its message gives a character position (`at position 14`, and on
 * newer Node also `(line 2 column 3)`), turned here into a line, a column and an excerpt with a caret.
 */
export function parseJsonText(text: string): ParsedJson {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const position = /at position (\d+)/.exec(message)?.[1];
    if (position === undefined) {
      // "Unexpected end of JSON input": the error is at the end of the text.
      return /end of JSON input/.test(message)
        ? { ok: false, message, ...locate(text, text.length) }
        : { ok: false, message };
    }
    return { ok: false, message, ...locate(text, Number(position)) };
  }
}

/** Widest excerpt: a longer line (a one-line JSON document, say) is cut to this many characters around the column. */
export const EXCERPT_WIDTH = 120;

/** Line, column and a caret excerpt of character `offset` of `text`. */
function locate(text: string, offset: number): { line: number; column: number; excerpt: string } {
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  const lineStart = before.lastIndexOf("\n") + 1;
  const column = offset - lineStart + 1;
  const end = text.indexOf("\n", lineStart);
  const source = text.slice(lineStart, end < 0 ? undefined : end).replace(/\r$/, "");
  if (source.length <= EXCERPT_WIDTH) return { line, column, excerpt: `${source}\n${" ".repeat(column - 1)}^` };
  const from = Math.max(0, Math.min(column - 1 - EXCERPT_WIDTH / 2, source.length - EXCERPT_WIDTH));
  const to = from + EXCERPT_WIDTH;
  const shown = `${from > 0 ? "…" : ""}${source.slice(from, to)}${to < source.length ? "…" : ""}`;
  const caret = column - 1 - from + (from > 0 ? 1 : 0);
  return { line, column, excerpt: `${shown}\n${" ".repeat(caret)}^` };
}
