/**
 * A parser for `text/event-stream` bodies, as the WHATWG HTML standard
 * defines them ("9.2.6 Interpreting an event stream"), for use with `fetch`
 * where `EventSource` cannot send an `Authorization` header.
 */

/** One dispatched server-sent event. */
export interface SseMessage {
  /** The `event:` field, or `"message"` when the server named none. */
  event: string;
  /** The `data:` lines, joined with `\n`. */
  data: string;
  /** The `id:` field of this message, if it carried one. */
  id?: string;
  /** The `retry:` field of this message (milliseconds), if it carried one. */
  retry?: number;
}

/**
 * Turns a stream of text chunks into server-sent event lines and messages.
 * Feed it chunks with {@link SseParser.push}; it returns the messages each
 * chunk completed. Comments (keep-alives) are counted in
 * {@link SseParser.comments} and otherwise ignored.
 */
export class SseParser {
  private buffer = "";
  private sawFirstChunk = false;
  private pendingCr = false;
  private event = "";
  private data: string[] = [];
  private id: string | undefined;
  private retry: number | undefined;
  /** How many comment lines (`: ...`) were seen, keep-alives included. */
  comments = 0;

  /** Parses one more chunk of the body and returns the messages it completed. */
  push(chunk: string): SseMessage[] {
    if (!this.sawFirstChunk && chunk.length > 0) {
      this.sawFirstChunk = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    if (this.pendingCr && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.pendingCr = false;
    this.buffer += chunk;
    const out: SseMessage[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      const line = this.buffer.slice(start, i);
      if (c === "\r") {
        if (i + 1 === this.buffer.length) this.pendingCr = true;
        else if (this.buffer[i + 1] === "\n") i++;
      }
      start = i + 1;
      const message = this.line(line);
      if (message) out.push(message);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** Ends the body: a message without its closing blank line is dropped, as the standard says. */
  end(): void {
    this.buffer = "";
    this.resetMessage();
  }

  private line(line: string): SseMessage | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) {
      this.comments++;
      return undefined;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return undefined;
  }

  private dispatch(): SseMessage | undefined {
    const hasData = this.data.length > 0;
    const message: SseMessage = {
      event: this.event || "message",
      data: this.data.join("\n"),
    };
    if (this.id !== undefined) message.id = this.id;
    if (this.retry !== undefined) message.retry = this.retry;
    this.resetMessage();
    return hasData ? message : undefined;
  }

  private resetMessage(): void {
    this.event = "";
    this.data = [];
    this.id = undefined;
    this.retry = undefined;
  }
}

/**
 * Reads a `fetch` response body as server-sent events. `onBytes` is called for
 * every chunk received (keep-alive comments included), so a caller can watch
 * for a stalled connection.
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  onBytes?: () => void,
): AsyncGenerator<SseMessage, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new SseParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      onBytes?.();
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    parser.end();
  } finally {
    reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
