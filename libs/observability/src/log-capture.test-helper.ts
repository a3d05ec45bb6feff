import { Writable } from "node:stream";

/** A stream that keeps every log line written to it, parsed as JSON by `records()`. */
export class LogCapture extends Writable {
  /** Raw text written so far. */
  text = "";

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.text += chunk.toString();
    callback();
  }

  /** Each JSON line written so far. */
  records(): Record<string, unknown>[] {
    return this.text
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}
