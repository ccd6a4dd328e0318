/** The SDK client the app talks through, its API key storage, and a React context for it. */
import { createContext, useContext, type ReactNode } from "react";
import { SdWorkerClient } from "@sd-worker/sdk";

/** The sessionStorage key that holds the API key for this browser tab. */
export const API_KEY_STORAGE = "sd-worker.apiKey";

/** The API key saved in this tab, if any. */
export function loadApiKey(): string | null {
  try {
    return sessionStorage.getItem(API_KEY_STORAGE);
  } catch {
    return null;
  }
}

/** Saves (or, with null, forgets) the API key for this tab. */
export function saveApiKey(key: string | null): void {
  try {
    if (key) sessionStorage.setItem(API_KEY_STORAGE, key);
    else sessionStorage.removeItem(API_KEY_STORAGE);
  } catch {
    // Storage can be disabled; the key then lasts until the page reloads.
  }
}

/** A client for the worker that served this page, reading the key from sessionStorage on each request. */
export function createClient(baseUrl = ""): SdWorkerClient {
  return new SdWorkerClient({ baseUrl, apiKey: loadApiKey });
}

const ClientContext = createContext<SdWorkerClient | null>(null);

/** Makes `client` the one the hooks below it use. */
export function ClientProvider({ client, children }: { client: SdWorkerClient; children: ReactNode }) {
  return <ClientContext.Provider value={client}>{children}</ClientContext.Provider>;
}

/** The client from the nearest {@link ClientProvider}. */
export function useClient(): SdWorkerClient {
  const client = useContext(ClientContext);
  if (!client) throw new Error("useClient needs a <ClientProvider> above it");
  return client;
}
