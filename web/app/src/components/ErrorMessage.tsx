/** An error from the worker, shown with its title, message and field. */
import { FIELD_LABELS, type ShownError } from "../errors";

/** Props of {@link ErrorMessage}. */
export interface ErrorMessageProps {
  error: ShownError;
  onDismiss?: () => void;
}

/** An alert naming what went wrong and, when the worker said, which setting. */
export function ErrorMessage({ error, onDismiss }: ErrorMessageProps) {
  const field = error.field ? (FIELD_LABELS[error.field] ?? error.field) : null;
  return (
    <div className="error-message" role="alert">
      <div>
        <p className="error-title">{error.title}</p>
        <p className="error-text">
          {field && <strong>{field}: </strong>}
          {error.message}
        </p>
        {error.code && (
          <p className="error-code">
            {error.status !== null ? `HTTP ${error.status} · ` : ""}
            {error.code}
          </p>
        )}
      </div>
      {onDismiss && (
        <button type="button" className="icon" aria-label="Dismiss error" onClick={onDismiss}>
          ×
        </button>
      )}
    </div>
  );
}
