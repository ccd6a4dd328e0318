import { render, screen, waitFor, within, act } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { App } from "../src/App";
import { ClientProvider } from "../src/client";
import { FakeWorker, PNG_1x1 } from "./fakeWorker";

function renderApp(worker = new FakeWorker()) {
  render(
    <ClientProvider client={worker.client()}>
      <App />
    </ClientProvider>,
  );
  return worker;
}

describe("App", () => {
  it("adds LoRAs with a strength each and inserts embeddings' trigger words", async () => {
    const worker = new FakeWorker();
    worker.info = { ...worker.info, loras: { directory: "loras", count: 2 }, embeddings: { directory: "emb", names: ["easyneg"] } };
    worker.loras = [
      { name: "ink", size_bytes: 10, format: "kohya", targets: ["unet"] },
      { name: "styles/film", size_bytes: 10, format: "peft", targets: ["text_encoder", "unet"] },
    ];
    worker.embeddings = [{ name: "easyneg", vectors: 2, format: "a1111", widths: [768] }];
    renderApp(worker);
    const add = await screen.findByLabelText("LoRA");
    await waitFor(() => expect(within(add).getAllByRole("option")).toHaveLength(3));
    await userEvent.selectOptions(add, "ink");
    await userEvent.selectOptions(add, "styles/film");
    expect(within(add).getAllByRole("option")).toHaveLength(1);
    const slider = screen.getByLabelText("Strength of styles/film");
    expect(slider).toHaveValue("1");
    await userEvent.clear(screen.getByLabelText("Strength of styles/film, as a number"));
    await userEvent.type(screen.getByLabelText("Strength of styles/film, as a number"), "0.5");
    expect(slider).toHaveValue("0.5");
    await userEvent.click(screen.getByRole("button", { name: "Remove ink" }));
    await userEvent.type(screen.getByLabelText("Prompt"), "a cat");
    await userEvent.click(screen.getByRole("button", { name: "easyneg" }));
    expect(screen.getByLabelText("Prompt")).toHaveValue("a cat, easyneg");
    await userEvent.click(screen.getByLabelText("Insert into the negative instead"));
    await userEvent.click(screen.getByRole("button", { name: "easyneg" }));
    expect(screen.getByLabelText("Negative prompt")).toHaveValue("easyneg");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted).toHaveLength(1));
    expect(worker.submitted[0]).toMatchObject({
      prompt: "a cat, easyneg",
      negative_prompt: "easyneg",
      loras: [{ path: "styles/film", strength: 0.5 }],
    });
  });

  it("shows no LoRA or embedding controls for a worker without the directories", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    expect(screen.queryByText("LoRA and embeddings")).toBeNull();
    expect(worker.requests.some((r) => r.includes("/v1/loras") || r.includes("/v1/embeddings"))).toBe(false);
  });

  it("generates an image with live progress and keeps it in the gallery", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "a lighthouse");
    await userEvent.selectOptions(screen.getByLabelText("Size"), "draft");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(screen.getByRole("status")).toHaveTextContent("Queued: next to run"));
    expect(worker.submitted[0]).toMatchObject({ prompt: "a lighthouse", steps: 25, width: 256, height: 256, scheduler: "pndm" });
    expect(worker.submitted[0]!.seed).toBeUndefined();
    act(() => worker.run("job-1", 2, 31337));
    await waitFor(() => expect(screen.getByRole("img", { name: "Generated image: a lighthouse" })).toBeInTheDocument());
    expect(screen.getByTestId("percent")).toHaveTextContent("100 %");
    expect(screen.getByRole("heading", { name: "Gallery (1)" })).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Reuse seed" }));
    expect(screen.getByLabelText("Seed")).toHaveValue("fixed");
    expect(screen.getByLabelText("Seed value")).toHaveValue(31337);
  });

  it("makes several images in one job and shows them all in the gallery, in order", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "a lighthouse");
    expect(screen.getByLabelText("Images")).toHaveAttribute("max", "8");
    await userEvent.clear(screen.getByLabelText("Images"));
    await userEvent.type(screen.getByLabelText("Images"), "3");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted).toHaveLength(1));
    expect(worker.submitted[0]).toMatchObject({ num_images: 3 });
    act(() => worker.run("job-1", 2, 100));
    const gallery = await screen.findByRole("region", { name: "Gallery (3)" });
    const thumbs = within(gallery).getAllByRole("button", { name: /^Show/ });
    expect(thumbs.map((t) => t.getAttribute("aria-label"))).toEqual([100, 101, 102].map((seed) => `Show “a lighthouse” (seed ${seed})`));
    expect(thumbs[0]).toHaveAttribute("aria-pressed", "true");
    expect(screen.getByText(/image 1 of 3 · 512×512 · seed 100 /)).toBeInTheDocument();
    await userEvent.click(thumbs[2]!);
    expect(screen.getByText(/image 3 of 3 · 512×512 · seed 102 /)).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Reuse seed" }));
    expect(screen.getByLabelText("Seed value")).toHaveValue(102);
  });

  it("shows live previews while a job runs, and asks for none when unchecked", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "a lighthouse");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted).toHaveLength(1));
    expect(worker.submitted[0]).toMatchObject({ preview: true });
    const preview = { data_url: `data:image/png;base64,${PNG_1x1}`, width: 64, height: 64 };
    act(() => {
      worker.emit("job-1", { type: "progress", step: 1, total: 2, percent: 50, preview });
    });
    const img = await screen.findByRole("img", { name: "Live preview after step 1" });
    expect(img).toHaveAttribute("src", preview.data_url);
    act(() => worker.run("job-1", 2));
    await waitFor(() => expect(screen.getByRole("img", { name: "Generated image: a lighthouse" })).toBeInTheDocument());
    expect(screen.queryByRole("img", { name: /Live preview/ })).toBeNull();

    await userEvent.click(screen.getByRole("checkbox", { name: "Live preview" }));
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted).toHaveLength(2));
    expect(worker.submitted[1]).not.toHaveProperty("preview");
  });

  it("cancels a running job", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "slow");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await userEvent.click(await screen.findByRole("button", { name: "Cancel" }));
    await waitFor(() => expect(screen.getByRole("status")).toHaveTextContent("Cancelled"));
    expect(worker.cancelled).toEqual(["job-1"]);
    expect(screen.getByRole("button", { name: "Generate" })).toBeEnabled();
  });

  it("shows the worker's validation error next to the field", async () => {
    const worker = renderApp();
    worker.submitAnswers.push({
      status: 400,
      body: { error: { code: "invalid_request", field: "steps", message: "lcm takes at most 50 steps, got 140" } },
    });
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "x");
    await userEvent.clear(screen.getByLabelText("Steps"));
    await userEvent.type(screen.getByLabelText("Steps"), "140");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("Steps: lcm takes at most 50 steps, got 140");
    expect(screen.getByLabelText("Steps")).toHaveAttribute("aria-invalid", "true");
    await userEvent.click(within(alert).getByRole("button", { name: "Dismiss error" }));
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("checks numbers in plain words before sending, and sends nothing then", async () => {
    const worker = renderApp();
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "x");
    const cases: Array<[string, string, string]> = [
      ["Steps", "500", "Steps must be at most 150; 500 is too large."],
      ["Steps", "", "Steps is empty: enter a whole number from 1 to 150."],
      ["Steps", "2.5", "Steps must be a whole number; 2.5 has a fraction."],
      ["Width", "-8", "Width must be at least 64; -8 is too small."],
      ["Width", "100", "Width must be a multiple of 8, such as 96 or 104."],
    ];
    for (const [label, value, message] of cases) {
      await userEvent.clear(screen.getByLabelText(label));
      if (value) await userEvent.type(screen.getByLabelText(label), value);
      await userEvent.click(screen.getByRole("button", { name: "Generate" }));
      const alert = await screen.findByRole("alert");
      expect(alert).toHaveTextContent(message);
      expect(screen.getByLabelText(label)).toHaveAttribute("aria-invalid", "true");
      await userEvent.clear(screen.getByLabelText(label));
      await userEvent.type(screen.getByLabelText(label), label === "Steps" ? "25" : "512");
    }
    expect(worker.submitted).toHaveLength(0);
  });

  it("asks for the API key on 401 and keeps it in sessionStorage", async () => {
    const worker = new FakeWorker();
    worker.apiKey = "s3cret";
    renderApp(worker);
    const input = await screen.findByLabelText("API key");
    expect(screen.getByRole("button", { name: "Generate" })).toBeDisabled();
    await userEvent.type(input, "s3cret");
    await userEvent.click(screen.getByRole("button", { name: "Use key" }));
    await waitFor(() => expect(screen.queryByLabelText("API key")).toBeNull());
    expect(sessionStorage.getItem("sd-worker.apiKey")).toBe("s3cret");
    await waitFor(() => expect(screen.getByLabelText("Steps")).toHaveValue(25));
    await userEvent.type(screen.getByLabelText("Prompt"), "locked");
    await userEvent.click(screen.getByRole("button", { name: "Generate" }));
    await waitFor(() => expect(worker.submitted).toHaveLength(1));
  });
});
