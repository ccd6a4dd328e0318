import { act, fireEvent, render, renderHook, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "../src/App";
import { ClientProvider } from "../src/client";
import { ImageDisplay } from "../src/components/ImageDisplay";
import { ImageInputs } from "../src/components/ImageInputs";
import { ImagePicker } from "../src/components/ImagePicker";
import { MaskEditor } from "../src/components/MaskEditor";
import { ModeSwitch } from "../src/components/ModeSwitch";
import { describeError } from "../src/errors";
import { useImageInputs } from "../src/hooks/useImageInputs";
import type { GalleryEntry } from "../src/hooks/useImageGeneration";
import type { MaskPicture, Picture } from "../src/images";
import type { Mode } from "../src/settings";
import { ApiError } from "@sd-worker/sdk";
import { FakeWorker, INFO, PNG_1x1, pngFile } from "./fakeWorker";

const picture: Picture = { base64: PNG_1x1, mime: "image/png", width: 128, height: 96, name: "photo.png", bytes: 27 * 1024 };

/** A 2D context that records strokes: every pixel reads back painted once anything was drawn. */
function fakeCanvas() {
  const calls: string[] = [];
  let painted = false;
  const ctx = {
    save: () => calls.push("save"),
    restore: () => calls.push("restore"),
    beginPath: () => undefined,
    moveTo: () => undefined,
    lineTo: () => undefined,
    arc: () => undefined,
    fill: () => {
      painted = true;
      calls.push("fill");
    },
    stroke: () => {
      painted = true;
      calls.push("stroke");
    },
    clearRect: () => {
      painted = false;
      calls.push("clear");
    },
    drawImage: () => undefined,
    putImageData: () => calls.push("put"),
    createImageData: (w: number, h: number) => ({ width: w, height: h, data: new Uint8ClampedArray(w * h * 4) }),
    getImageData: (_x: number, _y: number, w: number, h: number) => ({
      width: w,
      height: h,
      data: new Uint8ClampedArray(w * h * 4).fill(painted ? 255 : 0),
    }),
  };
  vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation((() => ctx) as never);
  vi.spyOn(HTMLCanvasElement.prototype, "toDataURL").mockImplementation(() => "data:image/png;base64,TUFTSw==");
  return { calls, ctx };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("ModeSwitch", () => {
  it("offers the three modes as radio buttons", async () => {
    const onChange = vi.fn();
    render(<ModeSwitch mode="text" onChange={onChange} />);
    expect(screen.getByRole("radio", { name: "Text to image" })).toBeChecked();
    await userEvent.click(screen.getByRole("radio", { name: "Inpaint" }));
    expect(onChange).toHaveBeenCalledWith("inpaint");
  });
});

describe("ImagePicker", () => {
  it("takes a chosen or dropped file and shows what was picked", async () => {
    const onFile = vi.fn();
    const onRemove = vi.fn();
    const { rerender } = render(<ImagePicker id="pick" label="Input image" picture={null} onFile={onFile} onRemove={onRemove} />);
    expect(screen.getByText("Drop a PNG or JPEG here, or choose a file.")).toBeInTheDocument();
    const file = pngFile("a.png", 10, 10);
    await userEvent.upload(screen.getByLabelText("Input image"), file);
    expect(onFile).toHaveBeenCalledWith(file);
    const dropped = pngFile("b.png", 10, 10);
    const zone = screen.getByTestId("pick-drop");
    fireEvent.dragOver(zone, { dataTransfer: { files: [dropped] } });
    expect(zone).toHaveClass("dragging");
    fireEvent.drop(zone, { dataTransfer: { files: [dropped] } });
    expect(onFile).toHaveBeenLastCalledWith(dropped);
    expect(zone).not.toHaveClass("dragging");
    rerender(<ImagePicker id="pick" label="Input image" picture={picture} onFile={onFile} onRemove={onRemove} invalid />);
    expect(screen.getByText("photo.png · 128×96 px · 27 KB")).toBeInTheDocument();
    expect(screen.getByLabelText("Input image")).toHaveAttribute("aria-invalid", "true");
    await userEvent.click(screen.getByRole("button", { name: "Remove input image" }));
    expect(onRemove).toHaveBeenCalled();
  });
});

describe("useImageInputs", () => {
  it("reads an image, drops the mask on a new image, and names the field of a refused file", async () => {
    const { result } = renderHook(() => useImageInputs());
    await act(async () => {
      await result.current.pickImage(pngFile("in.png", 132, 100));
    });
    expect(result.current.image).toMatchObject({ name: "in.png", width: 132, height: 100 });
    await act(async () => {
      await result.current.pickMask(pngFile("mask.png", 132, 100));
    });
    expect(result.current.mask).toMatchObject({ name: "mask.png", painted: false });
    await act(async () => {
      await result.current.pickMask(new File(["GIF89a"], "mask.gif", { type: "image/gif" }));
    });
    expect(result.current.error).toEqual({
      field: "mask_image",
      message: "mask.gif is not a PNG or JPEG picture (image/gif); the worker reads only those.",
    });
    expect(result.current.mask).not.toBeNull();
    act(() => result.current.clearError());
    expect(result.current.error).toBeNull();
    act(() => result.current.setImage(picture));
    expect(result.current.image).toBe(picture);
    expect(result.current.mask).toBeNull();
    await act(async () => {
      await result.current.pickImage(new File(["text"], "notes.txt", { type: "text/plain" }));
    });
    expect(result.current.error?.field).toBe("input_image");
    expect(result.current.image).toBe(picture);
  });
});

describe("MaskEditor", () => {
  it("exports a stroke as a PNG mask of the picture's exact size, and clears it", async () => {
    const { calls } = fakeCanvas();
    const onChange = vi.fn();
    function Harness() {
      const [mask, setMask] = useState<MaskPicture | null>(null);
      return (
        <MaskEditor
          image={picture}
          mask={mask}
          onChange={(m) => {
            onChange(m);
            setMask(m);
          }}
        />
      );
    }
    render(<Harness />);
    const canvas = screen.getByTestId("mask-canvas") as HTMLCanvasElement;
    expect([canvas.width, canvas.height]).toEqual([128, 96]);
    expect(screen.getByRole("button", { name: "Clear mask" })).toBeDisabled();
    fireEvent.pointerDown(canvas, { clientX: 10, clientY: 10, button: 0, pointerId: 1 });
    fireEvent.pointerMove(canvas, { clientX: 40, clientY: 20, pointerId: 1 });
    fireEvent.pointerUp(canvas, { pointerId: 1 });
    expect(calls).toContain("fill");
    expect(calls).toContain("stroke");
    expect(onChange).toHaveBeenCalledTimes(1);
    expect(onChange.mock.calls[0]![0]).toMatchObject({ base64: "TUFTSw==", mime: "image/png", width: 128, height: 96, painted: true });
    await userEvent.click(screen.getByRole("button", { name: "Clear mask" }));
    expect(onChange).toHaveBeenLastCalledWith(null);
    expect(calls).toContain("clear");
  });

  it("reports no mask when erasing leaves nothing painted, and changes the brush size", async () => {
    const { ctx } = fakeCanvas();
    const onChange = vi.fn();
    render(<MaskEditor image={picture} mask={null} onChange={onChange} />);
    fireEvent.change(screen.getByRole("slider", { name: /Brush/ }), { target: { value: "64" } });
    expect(screen.getByText("64 px")).toBeInTheDocument();
    await userEvent.click(screen.getByLabelText("Erase"));
    ctx.fill = () => undefined;
    const canvas = screen.getByTestId("mask-canvas");
    fireEvent.pointerDown(canvas, { clientX: 5, clientY: 5, button: 0 });
    fireEvent.pointerUp(canvas);
    expect(onChange).toHaveBeenCalledWith(null);
  });
});

describe("ImageInputs", () => {
  function Harness({ mode, error = null, onMatchSize = () => undefined }: { mode: Exclude<Mode, "text">; error?: ReturnType<typeof describeError> | null; onMatchSize?: (w: number, h: number) => void }) {
    const inputs = useImageInputs();
    const [strength, setStrength] = useState(mode === "image" ? "0.8" : "1");
    return (
      <>
        <button type="button" onClick={() => inputs.setImage({ ...picture, width: 132, height: 100 })}>
          set picture
        </button>
        <ImageInputs
          mode={mode}
          inputs={inputs}
          onImageFile={(file) => void inputs.pickImage(file)}
          strength={strength}
          onStrengthChange={setStrength}
          steps="20"
          width="128"
          height="96"
          onMatchSize={onMatchSize}
          limits={INFO.limits}
          error={error}
          onDismissError={() => undefined}
        />
      </>
    );
  }

  it("shows the picture, the output size and a strength slider with the steps that run", async () => {
    render(<Harness mode="image" />);
    const strength = screen.getByRole("slider", { name: /Strength/ });
    expect(strength).toHaveValue("0.8");
    expect(screen.getByText(/Runs about 16 of 20 steps/)).toBeInTheDocument();
    fireEvent.change(strength, { target: { value: "0.5" } });
    expect(screen.getByText("0.50")).toBeInTheDocument();
    expect(screen.getByText(/Runs about 10 of 20 steps/)).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "set picture" }));
    expect(screen.getByRole("img", { name: "Input image: photo.png" })).toBeInTheDocument();
    expect(screen.getByText("Output 128×96 (the image's size rounded down to 8)")).toBeInTheDocument();
  });

  it("offers the picture's size when the output size differs", async () => {
    const onMatchSize = vi.fn();
    render(<Harness mode="image" onMatchSize={onMatchSize} />);
    await userEvent.upload(screen.getByLabelText("Input image"), pngFile("big.png", 300, 200));
    await userEvent.click(await screen.findByRole("button", { name: "Use 296×200" }));
    expect(onMatchSize).toHaveBeenCalledWith(296, 200);
  });

  it("shows the worker's mask error at the mask, and a refused file at its picker", async () => {
    fakeCanvas();
    const error = describeError(new ApiError(400, "invalid_request", "is 64x64 but the picture is 132x100; they must be the same size", "mask_image"));
    render(<Harness mode="inpaint" error={error} />);
    await userEvent.click(screen.getByRole("button", { name: "set picture" }));
    expect(screen.getByTestId("mask-canvas")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByRole("alert")).toHaveTextContent("Mask: is 64x64 but the picture is 132x100");
    await userEvent.upload(screen.getByLabelText("Mask file (optional)"), pngFile("small.png", 64, 64));
    expect(await screen.findByText(/The worker needs a mask of the image's size, 132×100/)).toBeInTheDocument();
    expect(screen.getByText("small.png · 64×64 px · 70 B")).toBeInTheDocument();
    await userEvent.upload(screen.getByLabelText("Mask file (optional)"), new File(["GIF89a"], "m.gif", { type: "image/gif" }), {
      applyAccept: false,
    });
    expect(await screen.findByText(/m.gif is not a PNG or JPEG picture/)).toBeInTheDocument();
    expect(screen.getByRole("alert")).toHaveTextContent("Cannot use this file");
  });
});

describe("ImageDisplay", () => {
  it("names the operation and strength, copies them, and offers the image as input", async () => {
    const entry: GalleryEntry = {
      jobId: "job-1",
      operation: "image_transform",
      params: { prompt: "sea", negative_prompt: null, prompt_syntax: "a1111", steps: 10, guidance_scale: 7.5, width: 128, height: 96, seed: 5, num_images: 1, scheduler: "euler_a", strength: 0.8 },
      result: { image: PNG_1x1, format: "png", seed: 5, width: 128, height: 96, timings: { queued_ms: 0, generation_ms: 700, total_ms: 700 } },
      finishedAt: 0,
    };
    const writeClipboard = vi.fn(async (_text: string) => undefined);
    const onUseAsInput = vi.fn();
    render(<ImageDisplay entry={entry} onReuseSeed={() => undefined} onUseSettings={() => undefined} onUseAsInput={onUseAsInput} writeClipboard={writeClipboard} />);
    expect(screen.getByText(/^Image to image · strength 0.8 · 128×96 · seed 5/)).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Copy settings" }));
    expect(JSON.parse(writeClipboard.mock.calls[0]![0])).toMatchObject({ operation: "image_transform", strength: 0.8, seed: 5 });
    await userEvent.click(screen.getByRole("button", { name: "Use as input" }));
    expect(onUseAsInput).toHaveBeenCalledWith(entry);
  });
});

describe("App in the image modes", () => {
  function renderApp(worker = new FakeWorker()) {
    render(
      <ClientProvider client={worker.client()}>
        <App />
      </ClientProvider>,
    );
    return worker;
  }

  it("sends image to image with the picked picture, its size and the strength", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    expect(screen.queryByLabelText("Input image")).toBeNull();
    await userEvent.click(screen.getByRole("radio", { name: "Image to image" }));
    await userEvent.type(screen.getByLabelText("Prompt"), "a sea");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Input image: choose a PNG or JPEG picture to start from.");
    expect(worker.submitted).toHaveLength(0);
    await userEvent.upload(screen.getByLabelText("Input image"), pngFile("sea.png", 132, 100));
    await waitFor(() => expect(screen.getByLabelText("Width")).toHaveValue(128));
    expect(screen.getByLabelText("Height")).toHaveValue(96);
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted).toHaveLength(1));
    const body = worker.submitted[0]!;
    expect(body).toMatchObject({ operation: "image_transform", prompt: "a sea", width: 128, height: 96, strength: 0.8 });
    expect(body.input_image).toMatch(/^iVBORw0KGgo/);
    act(() => worker.run("job-1", 2, 7));
    expect(await screen.findByText(/^Image to image · strength 0.8/)).toBeInTheDocument();
  });

  it("asks for a mask, shows the worker's mask error there, and takes a result as input", async () => {
    fakeCanvas();
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "a boat");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    act(() => worker.run("job-1", 2, 11));
    await userEvent.click(await screen.findByRole("button", { name: "Use as input" }));
    expect(screen.getByRole("radio", { name: "Image to image" })).toBeChecked();
    expect(screen.getByText(/^result \(seed 11\) · 512×512 px/)).toBeInTheDocument();
    await userEvent.click(screen.getByRole("radio", { name: "Inpaint" }));
    expect(screen.getByRole("slider", { name: /Strength/ })).toHaveValue("1");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    const section = screen.getByRole("region", { name: "Inpainting input" });
    expect(within(section).getByRole("alert")).toHaveTextContent("Mask: paint over the part to repaint");

    worker.submitAnswers.push({
      status: 400,
      body: { error: { code: "invalid_request", field: "mask_image", message: "is 64x64 but the picture is 512x512; they must be the same size" } },
    });
    await userEvent.upload(screen.getByLabelText("Mask file (optional)"), pngFile("small.png", 64, 64));
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    expect(await within(section).findByRole("alert")).toHaveTextContent("Mask: is 64x64 but the picture is 512x512");
    expect(worker.submitted.at(-1)).toMatchObject({ operation: "image_inpaint", strength: 1, width: 512, height: 512 });

    const canvas = screen.getByTestId("mask-canvas");
    fireEvent.pointerDown(canvas, { clientX: 10, clientY: 10, button: 0 });
    fireEvent.pointerUp(canvas);
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    expect(screen.getByTestId("mask-status")).toHaveTextContent("Painted mask · 512×512 px");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted.at(-1)).toMatchObject({ operation: "image_inpaint", mask_image: "TUFTSw==", init_image: PNG_1x1 }));
  });
});
