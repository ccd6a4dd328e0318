import { describe, expect, it } from "vitest";
import { parseA1111, pngParameters } from "../src/pngSettings";
import { withoutJobIds } from "../src/errors";
import { mixByMask, withParameters } from "../src/maskBlur";

/** A PNG signature, one tEXt chunk and IEND (CRCs are not checked by the reader). */
function pngWithText(keyword: string, text: string): Uint8Array {
  const data = new TextEncoder().encode(`${keyword}\0${text}`);
  const chunk = new Uint8Array(12 + data.length);
  new DataView(chunk.buffer).setUint32(0, data.length);
  chunk.set(new TextEncoder().encode("tEXt"), 4);
  chunk.set(data, 8);
  const end = new Uint8Array([0, 0, 0, 0, 73, 69, 78, 68, 0, 0, 0, 0]);
  return new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, ...chunk, ...end]);
}

const A1111 =
  "a lighthouse, (oil:1.2)\nat dusk\nNegative prompt: blurry, dark\n" +
  'Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, Model hash: abc, Model: "v1, 5", Denoising strength: 0.6, Clip skip: 2';

describe("reading settings back", () => {
  it("reads the parameters chunk of a PNG", () => {
    expect(pngParameters(pngWithText("parameters", A1111))).toBe(A1111);
    expect(pngParameters(pngWithText("Comment", A1111))).toBeNull();
    expect(pngParameters(new Uint8Array([1, 2, 3]))).toBeNull();
  });

  it("fills the form from A1111 settings text", () => {
    expect(parseA1111(A1111)).toEqual({
      prompt: "a lighthouse, (oil:1.2)\nat dusk",
      negativePrompt: "blurry, dark",
      steps: "20",
      guidanceScale: "7.5",
      seedMode: "fixed",
      seed: "42",
      width: "512",
      height: "768",
      scheduler: "euler_a",
      strength: "0.6",
    });
    expect(parseA1111("just a prompt")).toBeNull();
    expect(parseA1111("a cat\nSteps: 4, Sampler: Heun")).toEqual({ prompt: "a cat", negativePrompt: "", steps: "4" });
  });

  it("puts job ids in words", () => {
    expect(withoutJobIds(`job job-${"ab".repeat(16)} not found`)).toBe("the job not found");
  });
});

describe("mask blur", () => {
  it("mixes the repainted pixels in by the mask's lightness", () => {
    const repainted = new Uint8ClampedArray([200, 200, 200, 255, 200, 200, 200, 255, 200, 200, 200, 255]);
    const original = new Uint8ClampedArray([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
    const mask = new Uint8ClampedArray([255, 255, 255, 255, 128, 128, 128, 255, 0, 0, 0, 255]);
    expect([...mixByMask(repainted, original, mask)]).toEqual([200, 200, 200, 255, 100, 100, 100, 255, 0, 0, 0, 255]);
  });

  it("writes the parameters text back into the blended PNG", () => {
    const written = withParameters(pngWithHeader(), "a cat\nSteps: 2, Mask blur: 4");
    expect(pngParameters(written)).toBe("a cat\nSteps: 2, Mask blur: 4");
  });
});

/** A PNG signature and a 13-byte IHDR chunk, then IEND. */
function pngWithHeader(): Uint8Array {
  const ihdr = new Uint8Array(25);
  new DataView(ihdr.buffer).setUint32(0, 13);
  ihdr.set(new TextEncoder().encode("IHDR"), 4);
  const end = new Uint8Array([0, 0, 0, 0, 73, 69, 78, 68, 0, 0, 0, 0]);
  return new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, ...ihdr, ...end]);
}
