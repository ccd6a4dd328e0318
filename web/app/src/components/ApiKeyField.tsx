/** The API key form, shown when the worker answers 401. */
import { useState, type FormEvent } from "react";

/** Props of {@link ApiKeyField}. */
export interface ApiKeyFieldProps {
  /** Whether a key was saved already (then it was refused). */
  hadKey: boolean;
  onSave: (key: string) => void;
}

/** Asks for the worker's API key; it is kept in this tab's sessionStorage only. */
export function ApiKeyField({ hadKey, onSave }: ApiKeyFieldProps) {
  const [key, setKey] = useState("");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (key.trim()) onSave(key.trim());
  };
  return (
    <form className="api-key" onSubmit={submit} aria-labelledby="api-key-title">
      <h2 id="api-key-title">API key required</h2>
      <p id="api-key-help">
        {hadKey
          ? "The worker refused the saved key. Enter the key it was started with (--api-key)."
          : "This worker was started with --api-key. Enter the key to use it; it is kept in this tab only."}
      </p>
      <label htmlFor="api-key">API key</label>
      <div className="inline">
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          value={key}
          aria-describedby="api-key-help"
          onChange={(e) => setKey(e.target.value)}
        />
        <button type="submit" className="primary" disabled={!key.trim()}>
          Use key
        </button>
      </div>
    </form>
  );
}
