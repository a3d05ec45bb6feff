/** Where the CLI writes: result lines, messages, and a live status line on an interactive terminal. */
export interface Output {
  /** A result line (stdout). */
  line(text: string): void;
  /** A message or an error (stderr). */
  error(text: string): void;
  /** Shows `text` as the bottom line of an interactive terminal, redrawn in place; undefined removes it. */
  live(text: string | undefined): void;
  /** Whether a live line is shown at all (stderr is a terminal). */
  readonly interactive: boolean;
  /** Whether lines may carry ANSI colours (stdout is a terminal and NO_COLOR is unset). */
  readonly color: boolean;
}

const CLEAR_LINE = "\r\x1b[2K";

/** The process's stdout/stderr; the live line goes to stderr, so `trellis watch ID > log` keeps only the lines. */
export function processOutput(env: Record<string, string | undefined> = process.env): Output {
  const interactive = process.stderr.isTTY === true;
  let shown: string | undefined;
  const hide = () => {
    if (shown !== undefined) process.stderr.write(CLEAR_LINE);
  };
  const show = () => {
    if (shown !== undefined) process.stderr.write(shown);
  };
  return {
    interactive,
    color: process.stdout.isTTY === true && !env.NO_COLOR,
    line(text) {
      hide();
      process.stdout.write(`${text}\n`);
      show();
    },
    error(text) {
      hide();
      process.stderr.write(`${text}\n`);
      show();
    },
    live(text) {
      if (!interactive) return;
      hide();
      shown = text;
      show();
    },
  };
}

/** An Output that keeps what is written, for tests. */
export class MemoryOutput implements Output {
  readonly lines: string[] = [];
  readonly errors: string[] = [];
  readonly liveLines: string[] = [];
  constructor(
    readonly interactive = false,
    readonly color = false,
  ) {}

  line(text: string): void {
    this.lines.push(text);
  }

  error(text: string): void {
    this.errors.push(text);
  }

  live(text: string | undefined): void {
    if (text !== undefined) this.liveLines.push(text);
  }
}
