/**
 * `@sd-worker/sdk`: a typed client for the sd-worker HTTP API.
 *
 * ```ts
 * import { SdWorkerClient } from "@sd-worker/sdk";
 * const client = new SdWorkerClient({ baseUrl: "http://127.0.0.1:8080", apiKey: "secret" });
 * const { result } = await client.generate(
 *   { prompt: "a lighthouse at dusk", steps: 20 },
 *   { onEvent: (e) => e.type === "progress" && console.log(`${e.step}/${e.total}`) },
 * );
 * ```
 *
 * The wire types are generated from the worker's `openapi.json` into
 * `schema.ts`; `types.ts` gives them short names.
 */
export {
  SdWorkerClient,
  imageBytes,
  imageDataUrl,
  resultImages,
  type ClientOptions,
  type GenerateOptions,
  type GenerationOutcome,
  type StreamOptions,
} from "./client.js";
export {
  ApiError,
  JobCancelledError,
  JobFailedError,
  NetworkError,
  StreamError,
  parseErrorBody,
} from "./errors.js";
export {
  base64DataUrl,
  base64ToBytes,
  blobToBase64,
  bytesToBase64,
  encodeImage,
  imageInfo,
  stripDataUrl,
  type EncodedImage,
  type ImageInfo,
} from "./images.js";
export { SseParser, readSse, type SseMessage } from "./sse.js";
export * from "./types.js";
export type { components, paths, operations } from "./schema.js";
