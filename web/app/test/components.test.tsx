import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { describe, expect, it, vi } from "vitest";
import { ApiKeyField } from "../src/components/ApiKeyField";
import { ErrorMessage } from "../src/components/ErrorMessage";
import { Gallery } from "../src/components/Gallery";
import { GenerationProgress, formatElapsed } from "../src/components/GenerationProgress";
import { ImageDisplay, downloadName } from "../src/components/ImageDisplay";
import { ParameterControls } from "../src/components/ParameterControls";
import { PromptInput } from "../src/components/PromptInput";
import { describeError } from "../src/errors";
import { CONNECTING } from "../src/hooks/jobView";
import type { JobStatusState } from "../src/hooks/useJobStatus";
import type { GalleryEntry } from "../src/hooks/useImageGeneration";
import { EMPTY_SETTINGS, withDefaults, type GenerationSettings } from "../src/settings";
import { ApiError } from "@sd-worker/sdk";
import { INFO, PNG_1x1 } from "./fakeWorker";

const entry: GalleryEntry = {
  jobId: "job-0123456789abcdef",
  params: { prompt: "a red fox", negative_prompt: "blur", prompt_syntax: "a1111", steps: 3, guidance_scale: 7.5, width: 64, height: 96, seed: 1234, num_images: 1, scheduler: "euler_a" },
  result: { image: PNG_1x1, format: "png", seed: 1234, width: 64, height: 96, timings: { queued_ms: 1, generation_ms: 2500, total_ms: 2501 } },
  finishedAt: 0,
};

function job(patch: Partial<JobStatusState>): JobStatusState {
  return { ...CONNECTING, elapsedMs: 0, streamError: null, reconnects: 0, ...patch };
}

describe("PromptInput", () => {
  it("labels its fields and generates on Ctrl+Enter", async () => {
    const onGenerate = vi.fn();
    function Harness() {
      const [prompt, setPrompt] = useState("");
      return (
        <PromptInput
          prompt={prompt}
          negativePrompt=""
          onPromptChange={setPrompt}
          onNegativePromptChange={() => undefined}
          onGenerate={onGenerate}
          busy={false}
        />
      );
    }
    render(<Harness />);
    const prompt = screen.getByLabelText("Prompt");
    await userEvent.type(prompt, "a cat");
    expect(prompt).toHaveValue("a cat");
    expect(screen.getByLabelText("Negative prompt")).toBeInTheDocument();
    await userEvent.keyboard("{Control>}{Enter}{/Control}");
    expect(onGenerate).toHaveBeenCalledTimes(1);
  });

  it("shows a busy button and marks an invalid prompt", () => {
    render(
      <PromptInput
        prompt=""
        negativePrompt=""
        onPromptChange={() => undefined}
        onNegativePromptChange={() => undefined}
        onGenerate={() => undefined}
        busy
        invalidField="prompt"
      />,
    );
    expect(screen.getByRole("button", { name: "Generating…" })).toBeDisabled();
    expect(screen.getByLabelText("Prompt")).toHaveAttribute("aria-invalid", "true");
  });
});

describe("ParameterControls", () => {
  function Harness({ onChange }: { onChange?: (s: GenerationSettings) => void }) {
    const [settings, setSettings] = useState(withDefaults(EMPTY_SETTINGS, INFO));
    return (
      <ParameterControls
        settings={settings}
        info={INFO}
        invalidField="width"
        onChange={(patch) =>
          setSettings((s) => {
            const next = { ...s, ...patch };
            onChange?.(next);
            return next;
          })
        }
      />
    );
  }

  it("shows the worker's defaults, presets and schedulers", async () => {
    render(<Harness />);
    expect(screen.getByLabelText("Steps")).toHaveValue(25);
    expect(screen.getByLabelText("Guidance")).toHaveValue(7.5);
    expect(screen.getByLabelText("Size")).toHaveDisplayValue("Default 512×512");
    const scheduler = screen.getByLabelText("Scheduler");
    expect(within(scheduler).getAllByRole("option").map((o) => o.textContent)).toEqual([
      "DDIM",
      "PNDM (PLMS)",
      "Euler",
      "Euler Ancestral",
      "DPM++ 2M",
      "DPM++ 2M Karras",
      "UniPC",
      "LCM",
    ]);
    expect(scheduler).toHaveValue("pndm");
    expect(screen.getByLabelText("Width")).toHaveAttribute("aria-invalid", "true");
  });

  it("applies a size preset and switches to Custom when the size is typed", async () => {
    const onChange = vi.fn();
    render(<Harness onChange={onChange} />);
    await userEvent.selectOptions(screen.getByLabelText("Size"), "draft");
    expect(screen.getByLabelText("Width")).toHaveValue(256);
    expect(screen.getByLabelText("Height")).toHaveValue(256);
    await userEvent.clear(screen.getByLabelText("Width"));
    await userEvent.type(screen.getByLabelText("Width"), "72");
    expect(screen.getByLabelText("Size")).toHaveValue("custom");
  });

  it("has a random seed by default and a fixed one on request", async () => {
    const onChange = vi.fn();
    render(<Harness onChange={onChange} />);
    const seed = screen.getByLabelText("Seed value");
    expect(seed).toBeDisabled();
    await userEvent.selectOptions(screen.getByLabelText("Seed"), "fixed");
    expect(seed).toBeEnabled();
    expect(Number((seed as HTMLInputElement).value)).toBeGreaterThanOrEqual(0);
    await userEvent.clear(seed);
    await userEvent.type(seed, "77");
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ seedMode: "fixed", seed: "77" }));
    await userEvent.click(screen.getByRole("button", { name: "New random seed" }));
    expect((seed as HTMLInputElement).value).not.toBe("77");
  });

  it("turns live previews off and on", async () => {
    const onChange = vi.fn();
    render(<Harness onChange={onChange} />);
    const preview = screen.getByRole("checkbox", { name: "Live preview" });
    expect(preview).toBeChecked();
    await userEvent.click(preview);
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ livePreview: false }));
    expect(preview).not.toBeChecked();
  });
});

describe("GenerationProgress", () => {
  it("shows the step counter, percent, elapsed time and a live status", async () => {
    const onCancel = vi.fn();
    render(
      <GenerationProgress job={job({ phase: "running", step: 3, total: 20, percent: 15, elapsedMs: 4200 })} onCancel={onCancel} cancelling={false} />,
    );
    expect(screen.getByRole("status")).toHaveTextContent("Generating: step 3 of 20");
    expect(screen.getByRole("status")).toHaveAttribute("aria-live", "polite");
    expect(screen.getByRole("progressbar", { name: "Progress" })).toHaveAttribute("value", "15");
    expect(screen.getByTestId("step-counter")).toHaveTextContent("3 / 20");
    expect(screen.getByTestId("percent")).toHaveTextContent("15 %");
    expect(screen.getByTestId("elapsed")).toHaveTextContent("4.2 s");
    await userEvent.click(screen.getByRole("button", { name: "Cancel" }));
    expect(onCancel).toHaveBeenCalled();
  });

  it("says which image of a batch is being made", () => {
    const params = { ...entry.params, steps: 2, num_images: 3 };
    render(<GenerationProgress job={job({ phase: "running", step: 3, total: 6, percent: 50, params })} onCancel={() => undefined} cancelling={false} />);
    expect(screen.getByRole("status")).toHaveTextContent("Generating: image 2 of 3, step 3 of 6");
  });

  it("describes queue, completion and cancellation, without Cancel once finished", () => {
    const { rerender } = render(<GenerationProgress job={job({ phase: "queued", queuePosition: 3 })} onCancel={() => undefined} cancelling={false} />);
    expect(screen.getByRole("status")).toHaveTextContent("Queued: 2 job(s) ahead");
    rerender(<GenerationProgress job={job({ phase: "running", step: 1, total: 2 })} onCancel={() => undefined} cancelling />);
    expect(screen.getByRole("status")).toHaveTextContent("Cancelling…");
    expect(screen.getByRole("button", { name: "Cancelling…" })).toBeDisabled();
    rerender(<GenerationProgress job={job({ phase: "completed", percent: 100, step: 2, total: 2 })} onCancel={() => undefined} cancelling={false} />);
    expect(screen.getByRole("status")).toHaveTextContent("Done");
    expect(screen.getByTestId("percent")).toHaveTextContent("100 %");
    expect(screen.queryByRole("button", { name: "Cancel" })).toBeNull();
    rerender(<GenerationProgress job={job({ phase: "cancelled", cancelledBy: "client" })} onCancel={() => undefined} cancelling={false} />);
    expect(screen.getByRole("status")).toHaveTextContent("Cancelled");
  });

  it("shows the live preview while the job runs, not once it is done", () => {
    const preview = { data_url: `data:image/png;base64,${PNG_1x1}`, width: 96, height: 64 };
    const { rerender } = render(
      <GenerationProgress job={job({ phase: "running", step: 2, total: 4, preview })} onCancel={() => undefined} cancelling={false} />,
    );
    const img = screen.getByRole("img", { name: "Live preview after step 2" });
    expect(img).toHaveAttribute("src", preview.data_url);
    expect(img).toHaveAttribute("width", "96");
    expect(img).toHaveAttribute("height", "64");
    rerender(<GenerationProgress job={job({ phase: "running", step: 1, total: 4 })} onCancel={() => undefined} cancelling={false} />);
    expect(screen.queryByRole("img")).toBeNull();
    rerender(<GenerationProgress job={job({ phase: "completed", step: 4, total: 4, preview })} onCancel={() => undefined} cancelling={false} />);
    expect(screen.queryByRole("img")).toBeNull();
  });

  it("formats elapsed time", () => {
    expect(formatElapsed(0)).toBe("0.0 s");
    expect(formatElapsed(59_940)).toBe("59.9 s");
    expect(formatElapsed(63_000)).toBe("1 min 03 s");
  });
});

describe("ImageDisplay", () => {
  it("shows the image with download, copy settings and reuse seed", async () => {
    const writeClipboard = vi.fn(async (_text: string) => undefined);
    const onReuseSeed = vi.fn();
    const onUseSettings = vi.fn();
    render(<ImageDisplay entry={entry} onReuseSeed={onReuseSeed} onUseSettings={onUseSettings} writeClipboard={writeClipboard} />);
    const img = screen.getByRole("img", { name: "Generated image: a red fox" });
    expect(img).toHaveAttribute("src", `data:image/png;base64,${PNG_1x1}`);
    expect(screen.getByText(/64×96 · seed 1234 · 3 steps · guidance 7.5 · Euler Ancestral · 2.5 s/)).toBeInTheDocument();
    const download = screen.getByRole("link", { name: "Download" });
    expect(download).toHaveAttribute("download", "sd-1234-01234567.png");
    expect(downloadName(entry)).toBe("sd-1234-01234567.png");
    await userEvent.click(screen.getByRole("button", { name: "Copy settings" }));
    expect(JSON.parse(writeClipboard.mock.calls[0]![0])).toMatchObject({ operation: "image_generation", seed: 1234, scheduler: "euler_a" });
    expect(await screen.findByText("Settings copied to the clipboard.")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Reuse seed" }));
    expect(onReuseSeed).toHaveBeenCalledWith(1234);
    await userEvent.click(screen.getByRole("button", { name: "Use all settings" }));
    expect(onUseSettings).toHaveBeenCalledWith(entry);
  });

  it("shows the settings as text when the clipboard is refused", async () => {
    const writeClipboard = vi.fn(async () => {
      throw new Error("denied");
    });
    render(<ImageDisplay entry={entry} onReuseSeed={() => undefined} onUseSettings={() => undefined} writeClipboard={writeClipboard} />);
    await userEvent.click(screen.getByRole("button", { name: "Copy settings" }));
    const text = (await screen.findByRole("textbox", { name: "Settings" })) as HTMLTextAreaElement;
    expect(text.value).toContain('"seed": 1234');
  });
});

describe("Gallery", () => {
  it("lists this session's images and selects one", async () => {
    const onSelect = vi.fn();
    const onClear = vi.fn();
    const second = { ...entry, jobId: "job-2" };
    render(<Gallery entries={[second, entry]} selected="job-2" onSelect={onSelect} onClear={onClear} />);
    expect(screen.getByRole("heading", { name: "Gallery (2)" })).toBeInTheDocument();
    const thumbs = screen.getAllByRole("button", { name: /Show “a red fox”/ });
    expect(thumbs[0]).toHaveAttribute("aria-pressed", "true");
    await userEvent.click(thumbs[1]!);
    expect(onSelect).toHaveBeenCalledWith(entry);
    await userEvent.click(screen.getByRole("button", { name: "Clear" }));
    expect(onClear).toHaveBeenCalled();
  });
});

describe("ErrorMessage", () => {
  it("names the field the worker blamed", () => {
    const error = new ApiError(400, "invalid_request", "must be between 1 and 150, got 500", "steps");
    render(<ErrorMessage error={describeError(error)} />);
    const alert = screen.getByRole("alert");
    expect(alert).toHaveTextContent("Invalid setting");
    expect(alert).toHaveTextContent("Steps: must be between 1 and 150, got 500");
    expect(alert).toHaveTextContent("HTTP 400 · invalid_request");
  });

  it("says when to retry a full queue", () => {
    render(<ErrorMessage error={describeError(new ApiError(503, "queue_full", "the queue is full (16 jobs)", null, 3))} />);
    expect(screen.getByRole("alert")).toHaveTextContent("The queue is full");
    expect(screen.getByRole("alert")).toHaveTextContent("Try again in 3 s.");
  });
});

describe("ApiKeyField", () => {
  it("saves a trimmed key", async () => {
    const onSave = vi.fn();
    render(<ApiKeyField hadKey={false} onSave={onSave} />);
    const input = screen.getByLabelText("API key");
    expect(input).toHaveAttribute("type", "password");
    expect(screen.getByRole("button", { name: "Use key" })).toBeDisabled();
    await userEvent.type(input, " k1 {Enter}");
    expect(onSave).toHaveBeenCalledWith("k1");
  });
});
