/** The worker's LoRAs and embeddings, read once its info says it has them (and again when the info is read again). */
import { useEffect, useState } from "react";
import type { EmbeddingInfo, LoraInfo, WorkerInfo } from "@sd-worker/sdk";
import { useClient } from "../client";

/** What {@link useLibrary} returns: null for a list the worker has no directory for (or has not answered yet). */
export interface Library {
  loras: LoraInfo[] | null;
  embeddings: EmbeddingInfo[] | null;
}

/** Lists `GET /v1/loras` and `GET /v1/embeddings` for a ready worker whose info names the directories. */
export function useLibrary(info: WorkerInfo | null): Library {
  const client = useClient();
  const [library, setLibrary] = useState<Library>({ loras: null, embeddings: null });
  const hasLoras = info?.ready === true && info.loras != null;
  const hasEmbeddings = info?.ready === true && info.embeddings != null;

  useEffect(() => {
    const controller = new AbortController();
    const load = async () => {
      const [loras, embeddings] = await Promise.all([
        hasLoras ? client.loras(controller.signal).then((l) => l.loras, () => null) : null,
        hasEmbeddings ? client.embeddings(controller.signal).then((e) => e.embeddings, () => null) : null,
      ]);
      if (!controller.signal.aborted) setLibrary({ loras, embeddings });
    };
    void load();
    return () => controller.abort();
  }, [client, info, hasLoras, hasEmbeddings]);

  return library;
}
