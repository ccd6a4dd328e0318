import { describe, expect, it } from "vitest";
import { SseParser, readSse } from "../src/sse.js";

function parseAll(chunks: string[]) {
  const parser = new SseParser();
  const out = chunks.flatMap((c) => parser.push(c));
  return { out, parser };
}

describe("SseParser", () => {
  it("parses named events with ids and multi-line data", () => {
    const { out } = parseAll(["event: progress\nid: 3\ndata: {\"a\":1}\n\n", "data: x\ndata: y\n\n"]);
    expect(out).toEqual([
      { event: "progress", id: "3", data: '{"a":1}' },
      { event: "message", data: "x\ny" },
    ]);
  });

  it("handles chunks split anywhere, CRLF and CR line ends, and a BOM", () => {
    const text = "\ufeffevent: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n";
    const whole = parseAll([text]).out;
    expect(whole).toEqual([
      { event: "a", data: "1" },
      { event: "b", data: "2" },
      { event: "message", data: "3" },
    ]);
    for (let cut = 1; cut < text.length; cut++) {
      expect(parseAll([text.slice(0, cut), text.slice(cut)]).out).toEqual(whole);
    }
    expect(parseAll(text.split("")).out).toEqual(whole);
  });

  it("counts comments, ignores unknown fields and messages without data", () => {
    const { out, parser } = parseAll([": keep-alive\n\nfoo: bar\nevent: x\n\nretry: 250\ndata:no-space\n\n"]);
    expect(out).toEqual([{ event: "message", data: "no-space", retry: 250 }]);
    expect(parser.comments).toBe(1);
  });

  it("drops a message that the body ends before its blank line", async () => {
    const body = new Response("data: 1\n\ndata: 2\n").body!;
    const messages = [];
    for await (const m of readSse(body)) messages.push(m.data);
    expect(messages).toEqual(["1"]);
  });

  it("decodes UTF-8 split across chunks", async () => {
    const bytes = new TextEncoder().encode("data: caf\u00e9 \u{1f600}\n\n");
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const b of bytes) controller.enqueue(new Uint8Array([b]));
        controller.close();
      },
    });
    const messages = [];
    for await (const m of readSse(body)) messages.push(m.data);
    expect(messages).toEqual(["caf\u00e9 \u{1f600}"]);
  });
});
