import type { WorkflowEvent } from "@trellis/proto";

/** Longest line of a node's text before it is wrapped (at its last space when there is one). */
const WRAP_AT = 100;

interface NodeText {
  attempt: number;
  /** The chunk index expected next: a resumed stream sends a running attempt's chunks again from the first. */
  next: number;
  /** Text not printed yet: the line being written. */
  partial: string;
}

/**
 * `watch --chunks`: the text running nodes write (their output chunks), printed line by line as it arrives, each line
 * `  <node> │ <text>` (`<node>#<attempt>` from a second attempt on). A line is printed when it is complete, wrapped
 * when long, or flushed when its attempt ends, so the text stays apart from the status lines and the live bar.
 */
export class ChunkText {
  private readonly nodes = new Map<string, NodeText>();

  constructor(private readonly print: (line: string) => void) {}

  /** Takes one `node.output_chunk` event; chunks seen before and older attempts' chunks are skipped. */
  add(event: WorkflowEvent): void {
    const index = Number(event.chunkIndex);
    let text = this.nodes.get(event.nodeId);
    if (text === undefined || event.attempt > text.attempt) {
      if (text) this.end(event.nodeId);
      text = { attempt: event.attempt, next: 0, partial: "" };
      this.nodes.set(event.nodeId, text);
    }
    if (event.attempt < text.attempt || index < text.next) return;
    text.next = index + 1;
    text.partial += event.chunk?.text ?? "";
    for (;;) {
      const newline = text.partial.indexOf("\n");
      if (newline >= 0 && newline <= WRAP_AT) {
        this.printLine(event.nodeId, text, text.partial.slice(0, newline));
        text.partial = text.partial.slice(newline + 1);
        continue;
      }
      if (text.partial.length <= WRAP_AT) break;
      const space = text.partial.lastIndexOf(" ", WRAP_AT);
      const cut = space > 0 ? space : WRAP_AT;
      this.printLine(event.nodeId, text, text.partial.slice(0, cut));
      text.partial = text.partial.slice(space > 0 ? cut + 1 : cut);
    }
  }

  /** Prints what is left of a node's current line (its attempt ended). */
  end(nodeId: string): void {
    const text = this.nodes.get(nodeId);
    if (!text || text.partial === "") return;
    this.printLine(nodeId, text, text.partial);
    text.partial = "";
  }

  /** Prints what is left of every node's line (the watch ended). */
  endAll(): void {
    for (const nodeId of this.nodes.keys()) this.end(nodeId);
  }

  private printLine(nodeId: string, text: NodeText, line: string): void {
    const who = text.attempt > 1 ? `${nodeId}#${text.attempt}` : nodeId;
    this.print(`  ${who} │ ${line}`);
  }
}
