/**
 * A typed client of the jupyter_compute REST API: the shapes it answers, and one method per
 * endpoint. Failures reject with `ComputeApiError` (see `request.ts`).
 */
import { ServerConnection } from '@jupyterlab/services';
import type { JSONSchema7 } from 'json-schema';

import { IRequestOptions, Method, requestJSON } from './request';

/** Every state a target reports, normalised across backends. */
export type TargetState =
  | 'creating'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'restarting'
  | 'deleting'
  | 'failed'
  | 'unknown';

export type OperationStatus = 'running' | 'succeeded' | 'failed';

export interface IWorkspace {
  id: string;
  kind: string;
  description: string;
  default: boolean;
  properties: Record<string, unknown>;
}

/** `GET /workspaces`: the workspaces, and the compute instance this server runs on, if any. */
export interface IWorkspaceListing {
  workspaces: IWorkspace[];
  /** Set on an Azure ML compute instance: the sidebar pins it. */
  this_instance?: {
    name: string;
    workspace: string | null;
    url?: string | null;
    [field: string]: unknown;
  } | null;
}

/** The body of `POST /workspaces`: an Azure ML workspace to add. */
export interface IAddWorkspaceRequest {
  subscription_id: string;
  resource_group: string;
  workspace_name: string;
  alias?: string;
  location?: string;
}

/** A kind of compute a workspace offers, as `GET …/kinds` describes it. */
export interface IKind {
  name: string;
  /** The sidebar group the kind's targets are shown in. */
  family: string;
  description: string;
  /** Created (and deleted) here when true; attached (and detached) otherwise. */
  managed: boolean;
  operations: string[];
  create_schema: JSONSchema7 | null;
  attach_schema?: JSONSchema7 | null;
  update_fields?: string[];
  examples?: Record<string, unknown>[];
  /** A running target of this kind holds a kernel's variables, which stop and restart lose. */
  keeps_variables?: boolean;
}

export interface ISize {
  name: string;
  vcpus?: number | null;
  memory_gb?: number | null;
  gpus?: number | null;
  low_priority?: boolean | null;
  price_per_hour?: number | null;
  /** Cores (or instances) of this size the quota still allows, where the backend knows. */
  quota_available?: number | null;
  compute_types?: string[];
}

export interface INodeCounts {
  current?: number | null;
  min?: number | null;
  max?: number | null;
  idle?: number | null;
  running?: number | null;
  preparing?: number | null;
  unusable?: number | null;
  leaving?: number | null;
  preempted?: number | null;
}

export interface IErrorDetail {
  message: string;
  code?: string | null;
  at?: string | null;
}

export interface ITarget {
  name: string;
  workspace: string;
  kind: string;
  managed: boolean;
  state: TargetState;
  provider_state?: string | null;
  size?: ISize | null;
  nodes?: INodeCounts | null;
  created: string;
  modified: string;
  idle_shutdown_at?: string | null;
  errors: IErrorDetail[];
  properties: Record<string, unknown>;
}

export interface INode {
  id: string;
  state: string;
  address?: string | null;
  port?: number | null;
  properties: Record<string, unknown>;
}

/** A job (a cell sent to an Azure ML compute cluster), as `GET /workspaces/{ws}/jobs` lists it. */
export interface IJob {
  name: string;
  display_name?: string | null;
  status: string;
  compute?: string | null;
  created?: string | null;
  duration_seconds?: number | null;
  age_seconds?: number | null;
  created_by?: string | null;
  studio_url?: string | null;
  /** What a cancel did. */
  note?: string;
}

/** Azure ML's statuses of a job that has ended. */
export const JOB_ENDED = new Set(['Completed', 'Failed', 'Canceled']);

export interface IUsage {
  name: string;
  unit: string;
  current: number;
  limit?: number | null;
}

export interface IOperation {
  id: string;
  target: string;
  workspace: string;
  action: string;
  status: OperationStatus;
  progress: string;
  error: { message?: string; reason?: string; field?: string | null } | null;
  started: string;
  ended: string | null;
}

/** Options of stop, restart and delete. */
export interface IActionOptions {
  /** The explicit go-ahead for an action whose consequence the server asked to be accepted. */
  confirm?: boolean;
}

/** A private key file the server's user could log in with, as `GET /ssh-keys` lists it. */
export interface ISshKeyFile {
  path: string;
  name: string;
  /** Permission bits in octal, e.g. `0600`. */
  mode: string;
  readable_by_others: boolean;
  /** False when the ssh kind would refuse the file; `problem` says why. */
  usable: boolean;
  problem: string | null;
}

export interface ISshKeyListing {
  directory: string;
  keys: ISshKeyFile[];
}

/** A Python environment on the server's machine, as `GET /pythons` lists it. */
export interface IPythonChoice {
  /** The interpreter, as a local kernel's `python` field takes it. */
  path: string;
  label: string;
  source: 'this' | 'conda' | 'venv' | 'kernelspec';
}

/** The body of `POST …/targets`: name, kind and the kind's spec fields, flat. */
export interface ITargetRequest {
  name: string;
  kind: string;
  [field: string]: unknown;
}

/** Where a device-code sign-in to an Azure ML workspace stands. */
export type SignInState =
  | 'pending'
  | 'signed_in'
  | 'failed'
  | 'expired'
  | 'cancelled';

/**
 * `…/workspaces/{ws}/sign-in`: the page to open and the code to enter there, and how far the
 * sign-in got. The token it gets stays in the server.
 */
export interface ISignIn {
  workspace: string;
  state: SignInState;
  verification_uri: string | null;
  user_code: string | null;
  message: string | null;
  expires_on: string | null;
  /** Who signed in, once signed in. */
  account: string | null;
  /** Why it failed, expired or ended, in Azure's words. */
  error: string | null;
}

/** The REST API of jupyter_compute. */
export class ComputeApi {
  constructor(options: { serverSettings?: ServerConnection.ISettings } = {}) {
    this.serverSettings =
      options.serverSettings ?? ServerConnection.makeSettings();
  }

  readonly serverSettings: ServerConnection.ISettings;

  /** `GET /workspaces` */
  async listWorkspaces(): Promise<IWorkspaceListing> {
    const body = await this._request<IWorkspaceListing>('GET', ['workspaces']);
    return {
      workspaces: body.workspaces,
      this_instance: body.this_instance ?? null
    };
  }

  /** `POST /workspaces`: add an Azure ML workspace. */
  addWorkspace(request: IAddWorkspaceRequest): Promise<IWorkspace> {
    return this._request<IWorkspace>('POST', ['workspaces'], {
      body: request
    });
  }

  /** `DELETE /workspaces/{ws}`: forget a workspace that was added. */
  async removeWorkspace(workspace: string): Promise<void> {
    await this._request<null>('DELETE', ['workspaces', workspace]);
  }

  /** `GET /workspaces/{ws}/kinds` */
  async listKinds(workspace: string): Promise<IKind[]> {
    const body = await this._request<{ kinds: IKind[] }>('GET', [
      'workspaces',
      workspace,
      'kinds'
    ]);
    return body.kinds;
  }

  /** `GET /workspaces/{ws}/targets` */
  async listTargets(workspace: string): Promise<ITarget[]> {
    const body = await this._request<{ targets: ITarget[] }>('GET', [
      'workspaces',
      workspace,
      'targets'
    ]);
    return body.targets;
  }

  /**
   * `POST /workspaces/{ws}/targets`: creates a target of a managed kind, or attaches one of
   * an unmanaged kind. Answers the long operation that does it.
   */
  async createTarget(
    workspace: string,
    request: ITargetRequest
  ): Promise<IOperation> {
    const body = await this._request<{ operation: IOperation }>(
      'POST',
      ['workspaces', workspace, 'targets'],
      { body: request }
    );
    return body.operation;
  }

  /** `GET /workspaces/{ws}/targets/{name}` */
  getTarget(workspace: string, name: string): Promise<ITarget> {
    return this._request<ITarget>('GET', [
      'workspaces',
      workspace,
      'targets',
      name
    ]);
  }

  /** `PATCH /workspaces/{ws}/targets/{name}`: only the fields to change. */
  updateTarget(
    workspace: string,
    name: string,
    changes: Record<string, unknown>
  ): Promise<ITarget> {
    return this._request<ITarget>(
      'PATCH',
      ['workspaces', workspace, 'targets', name],
      { body: changes }
    );
  }

  /**
   * `DELETE /workspaces/{ws}/targets/{name}`: deletes a managed target, detaches an attached one.
   * `confirm` accepts the consequence a `confirmation_required` answer named.
   */
  async deleteTarget(
    workspace: string,
    name: string,
    options: IActionOptions = {}
  ): Promise<IOperation> {
    const body = await this._request<{ operation: IOperation }>(
      'DELETE',
      ['workspaces', workspace, 'targets', name],
      { query: options.confirm ? { confirm: 'true' } : undefined }
    );
    return body.operation;
  }

  /** `POST /workspaces/{ws}/targets/{name}/start` */
  startTarget(workspace: string, name: string): Promise<IOperation> {
    return this._action(workspace, name, 'start');
  }

  /** `POST /workspaces/{ws}/targets/{name}/stop` */
  stopTarget(
    workspace: string,
    name: string,
    options: IActionOptions = {}
  ): Promise<IOperation> {
    return this._action(workspace, name, 'stop', options);
  }

  /** `POST /workspaces/{ws}/targets/{name}/restart` */
  restartTarget(
    workspace: string,
    name: string,
    options: IActionOptions = {}
  ): Promise<IOperation> {
    return this._action(workspace, name, 'restart', options);
  }

  /** `GET /workspaces/{ws}/targets/{name}/nodes` */
  async listNodes(workspace: string, name: string): Promise<INode[]> {
    const body = await this._request<{ nodes: INode[] }>('GET', [
      'workspaces',
      workspace,
      'targets',
      name,
      'nodes'
    ]);
    return body.nodes;
  }

  /** `POST /workspaces/{ws}/targets/{name}/rename`: a stopped target; its kernel follows. */
  async renameTarget(
    workspace: string,
    name: string,
    newName: string
  ): Promise<ITarget> {
    return this._request<ITarget>(
      'POST',
      ['workspaces', workspace, 'targets', name, 'rename'],
      { body: { name: newName } }
    );
  }

  /** `GET /workspaces/{ws}/jobs?target=` */
  async listJobs(workspace: string, target: string, top = 20): Promise<IJob[]> {
    const body = await this._request<{ jobs: IJob[] }>(
      'GET',
      ['workspaces', workspace, 'jobs'],
      { query: { target, top: String(top) } }
    );
    return body.jobs;
  }

  /** `POST /workspaces/{ws}/jobs/{job}/cancel` */
  async cancelJob(workspace: string, job: string): Promise<IJob> {
    return this._request<IJob>('POST', [
      'workspaces',
      workspace,
      'jobs',
      job,
      'cancel'
    ]);
  }

  /** `GET /workspaces/{ws}/sizes` */
  async listSizes(workspace: string): Promise<ISize[]> {
    const body = await this._request<{ sizes: ISize[] }>('GET', [
      'workspaces',
      workspace,
      'sizes'
    ]);
    return body.sizes;
  }

  /** `GET /workspaces/{ws}/usage` */
  async listUsage(workspace: string): Promise<IUsage[]> {
    const body = await this._request<{ usage: IUsage[] }>('GET', [
      'workspaces',
      workspace,
      'usage'
    ]);
    return body.usage;
  }

  /** `POST /workspaces/{ws}/sign-in`: begin a device-code sign-in (or get the pending one). */
  startSignIn(workspace: string): Promise<ISignIn> {
    return this._request<ISignIn>('POST', ['workspaces', workspace, 'sign-in']);
  }

  /** `GET /workspaces/{ws}/sign-in` */
  getSignIn(workspace: string): Promise<ISignIn> {
    return this._request<ISignIn>('GET', ['workspaces', workspace, 'sign-in']);
  }

  /** `DELETE /workspaces/{ws}/sign-in`: stop waiting for a pending sign-in. */
  cancelSignIn(workspace: string): Promise<ISignIn> {
    return this._request<ISignIn>('DELETE', [
      'workspaces',
      workspace,
      'sign-in'
    ]);
  }

  /** `GET /operations/{id}` */
  getOperation(id: string): Promise<IOperation> {
    return this._request<IOperation>('GET', ['operations', id]);
  }

  /** `GET /ssh-keys`: candidate private key files in the server user's ~/.ssh (paths only). */
  listSshKeys(): Promise<ISshKeyListing> {
    return this._request<ISshKeyListing>('GET', ['ssh-keys']);
  }

  /** `GET /pythons`: environments a local kernel can run in, this server's Python first. */
  async listPythons(): Promise<IPythonChoice[]> {
    const body = await this._request<{ pythons: IPythonChoice[] }>('GET', [
      'pythons'
    ]);
    return body.pythons;
  }

  /** `GET /kernelspecs/news`: how long ago the server last announced a change of targets or kernelspecs. */
  getKernelspecNews(): Promise<{ seconds_since_change: number }> {
    return this._request<{ seconds_since_change: number }>('GET', [
      'kernelspecs',
      'news'
    ]);
  }

  /** `GET /openapi.json` */
  getOpenApi(): Promise<Record<string, unknown>> {
    return this._request<Record<string, unknown>>('GET', ['openapi.json']);
  }

  /**
   * When the Jupyter server started (its own `GET /api/status`). It changes when the server
   * restarts, which tells a client that events may have been missed.
   */
  async serverStarted(): Promise<string> {
    const body = await this._request<{ started?: string }>(
      'GET',
      ['api', 'status'],
      { prefix: '' }
    );
    return String(body.started ?? '');
  }

  private async _action(
    workspace: string,
    name: string,
    action: 'start' | 'stop' | 'restart',
    options: IActionOptions = {}
  ): Promise<IOperation> {
    const body = await this._request<{ operation: IOperation }>(
      'POST',
      ['workspaces', workspace, 'targets', name, action],
      { body: options.confirm ? { confirm: true } : undefined }
    );
    return body.operation;
  }

  private _request<T>(
    method: Method,
    parts: string[],
    options?: IRequestOptions
  ): Promise<T> {
    return requestJSON<T>(this.serverSettings, method, parts, options);
  }
}
