/**
 * How a request reaches the Jupyter server and how its failures read: one JSON request over
 * `ServerConnection`, and the error that carries the server's `{message, reason, field}`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The path of the jupyter_compute API under the server's base URL. */
export const API_PREFIX = 'jupyter-compute';

/**
 * An error answered by the server (or a failure to reach it, with `status` 0).
 *
 * `field` is a JSON pointer into the request body when one field is at fault.
 */
export class ComputeApiError extends Error {
  constructor(options: {
    message: string;
    status: number;
    reason?: string;
    field?: string | null;
    details?: Record<string, unknown> | null;
  }) {
    super(options.message);
    this.name = 'ComputeApiError';
    this.status = options.status;
    this.reason = options.reason ?? 'error';
    this.field = options.field ?? null;
    this.details = options.details ?? null;
  }

  /** The HTTP status; 0 when the server could not be reached. */
  readonly status: number;
  readonly reason: string;
  readonly field: string | null;
  /**
   * What the server adds to explain the error; for `confirmation_required`, the
   * `consequence` the person must accept before the action is sent again with `confirm`.
   */
  readonly details: Record<string, unknown> | null;

  /** True when the server could not be reached at all. */
  get isNetworkError(): boolean {
    return this.status === 0;
  }
}

/** The text to show for anything a request, or the code around it, threw. */
export function messageOf(error: unknown): string {
  if (error instanceof ComputeApiError || error instanceof Error) {
    return error.message;
  }
  return String(error);
}

export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface IRequestOptions {
  /** Sent as JSON when given. */
  body?: unknown;
  /** Where the path starts under the base URL; the server's own API has none. */
  prefix?: string;
  query?: Record<string, string>;
}

/**
 * Send one request and answer its JSON body (null for a 204). Each path part is encoded on
 * its own, so target names cannot reach another endpoint. Rejects with a `ComputeApiError`.
 */
export async function requestJSON<T>(
  settings: ServerConnection.ISettings,
  method: Method,
  parts: string[],
  options: IRequestOptions = {}
): Promise<T> {
  const { body, prefix = API_PREFIX, query } = options;
  const url =
    URLExt.join(settings.baseUrl, prefix, ...parts.map(encodeURIComponent)) +
    (query ? URLExt.objectToQueryString(query) : '');
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { 'Content-Type': 'application/json' };
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ComputeApiError({
      message: `Could not reach the Jupyter server: ${
        (error as Error)?.message ?? String(error)
      }`,
      status: 0,
      reason: 'network_error'
    });
  }
  const text = await response.text();
  let data: unknown = undefined;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!response.ok) {
    const err = (data ?? {}) as {
      message?: unknown;
      reason?: unknown;
      field?: unknown;
      details?: unknown;
    };
    const message =
      typeof err.message === 'string' && err.message
        ? err.message
        : `${method} ${parts.join('/')} failed: ${response.status} ${
            response.statusText
          }`.trim();
    throw new ComputeApiError({
      message,
      status: response.status,
      reason: typeof err.reason === 'string' ? err.reason : 'http_error',
      field: typeof err.field === 'string' ? err.field : null,
      details:
        err.details && typeof err.details === 'object'
          ? (err.details as Record<string, unknown>)
          : null
    });
  }
  if (response.status === 204) {
    return null as T;
  }
  if (data === undefined) {
    throw new ComputeApiError({
      message: `${method} ${parts.join('/')} answered a body that is not JSON`,
      status: response.status,
      reason: 'bad_response'
    });
  }
  return data as T;
}
