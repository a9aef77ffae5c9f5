/**
 * Keeps the sidebar's model current with the server: turns jupyter_compute's events into
 * fetches and updates, notices server restarts, and while the server cannot be reached tries
 * again with a growing wait, then fetches everything once it answers.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

import type { ComputeApi, IWorkspaceListing, OperationStatus } from './api';
import { ComputeApiError } from './request';

/** Every event jupyter_compute emits has a schema id under this prefix. */
export const EVENT_PREFIX = 'https://events.jupyter.org/jupyter_compute/';
export const TARGET_EVENT = `${EVENT_PREFIX}target/v1`;
export const OPERATION_EVENT = `${EVENT_PREFIX}operation/v1`;

/** An event as Jupyter's event bus delivers it: the schema id plus the event's own fields. */
export interface IEventEmission {
  schema_id: string;
  [field: string]: unknown;
}

/** An operation event's fields, checked. */
export interface IOperationEvent {
  target: string;
  /** Null when the event names no operation: it then ends whichever is known. */
  id: string | null;
  action: string;
  status: OperationStatus;
  progress: string;
  /** Why a failed operation failed, when the event says. */
  error: string | null;
}

/**
 * What the watcher reads and changes of the model it keeps current. Given as functions so
 * that the model's own public surface stays what the components use.
 */
export interface ISyncedModel {
  /** The workspace shown: events of any other are ignored. */
  workspace(): string;
  /**
   * An event about target `name` of a workspace not shown: the model notes it when a list of
   * that workspace fetched before it is still to be shown (see `ComputeModel.prefetch`).
   */
  passedBy(workspace: string, name: string): void;
  /** Whether the model shows the server as unreachable. */
  isOffline(): boolean;
  /** Whether the model's lists are loaded. */
  isReady(): boolean;
  /** Show the server as unreachable. */
  setOffline(error: ComputeApiError): void;
  /** Show a failure that is not a lost connection. */
  showFailure(error: unknown): void;
  /**
   * Take the workspaces of a fresh listing and load the shown one again, dropping every
   * answer still on its way: the server may have restarted meanwhile.
   */
  reload(listing: IWorkspaceListing): Promise<void>;
  /** Load the workspaces and the shown one again. */
  refresh(): Promise<void>;
  /** Fetch one target again; folds calls made while one is on its way. */
  refreshTarget(name: string): Promise<void>;
  removeTarget(name: string): void;
  /** Show a known target as being deleted; false if it is not known. */
  markDeleting(name: string): boolean;
  /** Track an operation's progress or end. */
  applyOperation(event: IOperationEvent): void;
}

/** How long to wait before trying the server again, growing while it stays away. */
const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 8000, 15000];

/**
 * After the server came back, the list is fetched again now and then a few times more:
 * JupyterLab's event socket reconnects with a back-off of its own, and events sent before it
 * is back are not delivered.
 */
const RESYNC_DELAYS_MS = [3000, 10000, 30000];

/** How often the panel asks whether the server restarted, while the page is visible. */
const HEARTBEAT_MS = 5000;

export class ConnectionWatcher implements IDisposable {
  constructor(options: ConnectionWatcher.IOptions) {
    this._api = options.api;
    this._model = options.model;
    this._events = options.events ?? null;
    this._events?.connect(this._onEvent, this);
    this._reconnectDelays = options.reconnectDelaysMs ?? RECONNECT_DELAYS_MS;
    this._resyncDelays = options.resyncDelaysMs ?? RESYNC_DELAYS_MS;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Notice server restarts: one cheap status request every few seconds while the page is
   * visible (never one per target). A restart means events were missed, so the list is
   * fetched again.
   */
  watchServer(intervalMs: number = HEARTBEAT_MS): void {
    if (this._heartbeatTimer !== null || this._isDisposed) {
      return;
    }
    const beat = async () => {
      this._heartbeatTimer = null;
      if (this._isDisposed) {
        return;
      }
      const visible =
        typeof document === 'undefined' ||
        document.visibilityState !== 'hidden';
      if (visible && !this._model.isOffline()) {
        try {
          const started = await this._api.serverStarted();
          if (this._serverStarted && started !== this._serverStarted) {
            this._resync();
          }
          this._serverStarted = started;
        } catch (error) {
          this._model.showFailure(error);
        }
      }
      if (!this._isDisposed) {
        this._heartbeatTimer = setTimeout(() => void beat(), intervalMs);
      }
    };
    void beat();
  }

  /** The connection to the server was lost: show it, and try again until it answers. */
  connectionLost(error?: Error): void {
    if (this._isDisposed) {
      return;
    }
    const apiError =
      error instanceof ComputeApiError
        ? error
        : new ComputeApiError({
            message: error?.message || 'The Jupyter server cannot be reached.',
            status: 0,
            reason: 'network_error'
          });
    this._model.setOffline(apiError);
    this._scheduleReconnect();
  }

  /** Handle one event of Jupyter's event bus; events of other extensions are ignored. */
  handleEvent(event: IEventEmission): void {
    if (
      this._isDisposed ||
      typeof event?.schema_id !== 'string' ||
      !event.schema_id.startsWith(EVENT_PREFIX)
    ) {
      return;
    }
    if (this._model.isOffline()) {
      // Events flow again, so the server is back: what happened meanwhile is unknown.
      this._reconnectNow();
      return;
    }
    if (event.workspace !== this._model.workspace()) {
      const name =
        event.schema_id === OPERATION_EVENT ? event.target : event.name;
      if (typeof event.workspace === 'string' && typeof name === 'string') {
        this._model.passedBy(event.workspace, name);
      }
      return;
    }
    if (event.schema_id === OPERATION_EVENT) {
      this._onOperationEvent(event);
    } else if (typeof event.name === 'string') {
      if (event.change === 'removed') {
        // Nothing left to fetch. A fetch already on its way started earlier, so it cannot
        // bring the target back; a new target of the same name comes with its own event.
        this._model.removeTarget(event.name);
      } else if (
        event.state === 'deleting' &&
        this._model.markDeleting(event.name)
      ) {
        // A target being deleted has nothing new to fetch but its removal, which comes as an
        // event of its own.
      } else {
        void this._model.refreshTarget(event.name);
      }
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._events?.disconnect(this._onEvent, this);
    for (const timer of [
      this._reconnectTimer,
      this._heartbeatTimer,
      ...this._resyncTimers
    ]) {
      if (timer !== null) {
        clearTimeout(timer);
      }
    }
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._resyncTimers = [];
  }

  private _onEvent(_sender: unknown, event: IEventEmission): void {
    this.handleEvent(event);
  }

  private _onOperationEvent(event: IEventEmission): void {
    const name = event.target;
    if (typeof name !== 'string') {
      return;
    }
    const status = event.status as OperationStatus;
    const action = String(event.action ?? '');
    this._model.applyOperation({
      target: name,
      id: typeof event.id === 'string' ? event.id : null,
      action,
      status,
      progress: typeof event.progress === 'string' ? event.progress : '',
      error: typeof event.error === 'string' && event.error ? event.error : null
    });
    const removed =
      status === 'succeeded' && (action === 'delete' || action === 'detach');
    if (removed) {
      this._model.removeTarget(name);
    } else {
      void this._model.refreshTarget(name);
    }
  }

  private _scheduleReconnect(): void {
    if (this._reconnectTimer !== null || this._isDisposed) {
      return;
    }
    const delays = this._reconnectDelays;
    const delay = delays[Math.min(this._reconnectAttempt, delays.length - 1)];
    this._reconnectAttempt++;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      void this._tryReconnect();
    }, delay);
  }

  private _reconnectNow(): void {
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    void this._tryReconnect();
  }

  private async _tryReconnect(): Promise<void> {
    if (this._reconnecting || this._isDisposed) {
      return;
    }
    this._reconnecting = true;
    try {
      const listing = await this._api.listWorkspaces();
      if (this._isDisposed) {
        return;
      }
      this._reconnectAttempt = 0;
      await this._model.reload(listing);
      this._scheduleResync();
    } catch (error) {
      if (error instanceof ComputeApiError && error.isNetworkError) {
        this._scheduleReconnect();
      } else {
        this._model.showFailure(error);
      }
    } finally {
      this._reconnecting = false;
    }
  }

  /** Fetch everything again now, and a few times more while events catch up. */
  private _resync(): void {
    void this._tryReconnect();
  }

  private _scheduleResync(): void {
    for (const timer of this._resyncTimers) {
      clearTimeout(timer);
    }
    this._resyncTimers = this._resyncDelays.map(delay =>
      setTimeout(() => {
        if (!this._isDisposed && this._model.isReady()) {
          void this._model.refresh();
        }
      }, delay)
    );
  }

  private _api: ComputeApi;
  private _model: ISyncedModel;
  private _events: ISignal<unknown, IEventEmission> | null;
  private _isDisposed = false;
  private _reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private _reconnectAttempt = 0;
  private _reconnecting = false;
  private _reconnectDelays: readonly number[];
  private _resyncDelays: readonly number[];
  private _resyncTimers: ReturnType<typeof setTimeout>[] = [];
  private _heartbeatTimer: ReturnType<typeof setTimeout> | null = null;
  private _serverStarted = '';
}

export namespace ConnectionWatcher {
  export interface IOptions {
    api: ComputeApi;
    model: ISyncedModel;
    /** JupyterLab's event stream (`serviceManager.events.stream`). */
    events?: ISignal<unknown, IEventEmission>;
    /** Waits between attempts to reach a server that went away. */
    reconnectDelaysMs?: readonly number[];
    /** When to fetch the list again after the server came back. */
    resyncDelaysMs?: readonly number[];
  }
}
