/**
 * A stand-in for the server's HTTP answers, given to ServerConnection as its `fetch`: each
 * test routes method + path to a status and JSON body, and reads back the requests made.
 */
import { ServerConnection } from '@jupyterlab/services';

export interface IRecordedRequest {
  method: string;
  path: string;
  body: unknown;
  headers: Headers;
}

export type Handler = (
  request: IRecordedRequest
) =>
  | { status: number; body?: unknown }
  | Promise<{ status: number; body?: unknown }>;

export class FakeServer {
  readonly requests: IRecordedRequest[] = [];
  readonly settings: ServerConnection.ISettings;
  private routes: {
    method: string;
    path: string | RegExp;
    handler: Handler;
  }[] = [];
  failNetwork = false;

  constructor() {
    this.settings = ServerConnection.makeSettings({
      baseUrl: 'http://localhost:8888/base/',
      wsUrl: 'ws://localhost:8888/base/',
      token: 'secret-token',
      fetch: this.fetch.bind(this) as typeof fetch
    });
  }

  on(
    method: string,
    path: string | RegExp,
    handler: Handler | { status: number; body?: unknown }
  ): this {
    const fn: Handler = typeof handler === 'function' ? handler : () => handler;
    this.routes.unshift({ method, path, handler: fn });
    return this;
  }

  private async fetch(
    input: RequestInfo,
    init?: RequestInit
  ): Promise<Response> {
    if (this.failNetwork) {
      throw new TypeError('Failed to fetch');
    }
    const request = input instanceof Request ? input : new Request(input, init);
    const url = new URL(request.url);
    const prefix = '/base/jupyter-compute/';
    const path = url.pathname.startsWith(prefix)
      ? url.pathname.slice(prefix.length)
      : url.pathname;
    const text = await request.text();
    const recorded: IRecordedRequest = {
      method: request.method,
      path: decodeURIComponent(path),
      body: text ? JSON.parse(text) : undefined,
      headers: request.headers
    };
    this.requests.push(recorded);
    const route = this.routes.find(
      r =>
        r.method === request.method &&
        (typeof r.path === 'string'
          ? r.path === recorded.path
          : r.path.test(recorded.path))
    );
    if (!route) {
      return new Response(
        JSON.stringify({
          message: `no route for ${request.method} ${recorded.path}`,
          reason: 'not_found',
          field: null
        }),
        { status: 404, headers: { 'Content-Type': 'application/json' } }
      );
    }
    const answer = await route.handler(recorded);
    return new Response(
      answer.body === undefined ? null : JSON.stringify(answer.body),
      {
        status: answer.status,
        headers: { 'Content-Type': 'application/json' }
      }
    );
  }
}

export function target(
  name: string,
  extra: Record<string, unknown> = {}
): Record<string, unknown> {
  return {
    name,
    workspace: 'local',
    kind: 'local-kernel',
    managed: true,
    state: 'stopped',
    provider_state: null,
    size: null,
    nodes: { current: 0, min: 0, max: 1 },
    created: '2025-01-01T00:00:00+00:00',
    modified: '2025-01-01T00:00:00+00:00',
    idle_shutdown_at: null,
    errors: [],
    properties: {},
    ...extra
  };
}

/** What a kind that is created (not attached) can do. */
export const MANAGED_OPERATIONS = [
  'create',
  'update',
  'start',
  'stop',
  'restart',
  'delete',
  'nodes'
];

/** The one workspace every server has. */
export const LOCAL_WORKSPACE = {
  id: 'local',
  kind: 'local',
  description: '',
  default: true,
  properties: {}
};

export const KINDS = [
  {
    name: 'local',
    family: 'This machine',
    description: 'The machine this server runs on.',
    managed: true,
    operations: ['nodes'],
    create_schema: null
  },
  {
    name: 'local-kernel',
    family: 'Local kernels',
    description: 'A persistent ipykernel.',
    managed: true,
    operations: MANAGED_OPERATIONS,
    create_schema: {
      type: 'object',
      required: ['name'],
      properties: {
        name: { type: 'string', title: 'Name' },
        memory_limit_mb: {
          anyOf: [
            { type: 'integer', minimum: 64, maximum: 4194304 },
            { type: 'null' }
          ],
          default: null,
          title: 'Memory Limit Mb'
        }
      }
    }
  }
];

/** Let pending promise callbacks run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await new Promise(resolve => setTimeout(resolve, 0));
  }
}
