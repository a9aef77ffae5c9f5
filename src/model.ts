/**
 * The sidebar's model: the workspaces, the kinds and targets of the chosen workspace grouped by
 * family, and the operations running on them. A `ConnectionWatcher` keeps it current and a
 * `ViewState` holds what the person chose to see of it.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import type {
  ComputeApi,
  IActionOptions,
  IKind,
  IAddWorkspaceRequest,
  IOperation,
  ITarget,
  IWorkspaceListing,
  ITargetRequest,
  IWorkspace,
  OperationStatus,
  TargetState
} from './api';
import {
  ConnectionWatcher,
  IEventEmission,
  IOperationEvent
} from './connection';
import { ComputeApiError } from './request';
import type { TargetAction } from './state';
import { ViewState } from './viewState';

/** The order families are shown in; families not listed follow, alphabetically. */
export const FAMILY_ORDER: readonly string[] = [
  'This machine',
  'Local kernels',
  'Clusters',
  'Remote machines',
  'Compute instances',
  'Compute clusters',
  'Attached compute'
];

/** The family of targets whose kind the workspace no longer reports. */
export const OTHER_FAMILY = 'Other';

/** What the sidebar knows of an operation running on a target. */
export interface ITargetOperation {
  id: string | null;
  action: string;
  status: OperationStatus;
  progress: string;
}

export interface ITargetGroup {
  family: string;
  /** The kinds in this family, for the create button of an empty group. */
  kinds: IKind[];
  targets: ITarget[];
}

export interface IOperationFailure {
  workspace: string;
  target: string;
  action: string;
  message: string;
}

export type ModelStatus = 'loading' | 'ready' | 'error' | 'offline';

/** The state the server gives a target when it accepts each action. */
const TRANSITION: Record<TargetAction, TargetState> = {
  start: 'starting',
  stop: 'stopping',
  restart: 'restarting',
  delete: 'deleting'
};

/** How many ended operation ids are remembered. */
const ENDED_KEPT = 200;

/** Answers fetched before the first refresh (`ComputeModel.prefetch`). */
interface IEarlyAnswers {
  listing: IWorkspaceListing;
  /** The server's default workspace's lists, when that is the one to show and they came. */
  lists: IEarlyLists | null;
  /** The model's clock when they were asked for: anything fetched later wins over them. */
  stamp: number;
  /** Targets of that workspace that events named after they were asked for. */
  missed: ReadonlySet<string>;
}

interface IEarlyLists {
  workspace: string;
  kinds: IKind[];
  targets: ITarget[];
}

interface IPrefetched {
  listing: Promise<IWorkspaceListing>;
  lists: Promise<IEarlyLists | null>;
  stamp: number;
  /** Targets events named meanwhile, by workspace. */
  missed: Map<string, Set<string>>;
}

/** The workspace the server offers first. */
function defaultOf(listing: IWorkspaceListing): IWorkspace | undefined {
  return listing.workspaces.find(w => w.default) ?? listing.workspaces[0];
}

export class ComputeModel implements IDisposable {
  constructor(options: ComputeModel.IOptions) {
    this.api = options.api;
    this._workspace = options.workspace ?? 'local';
    this._view = new ViewState({ collapsed: options.collapsed });
    this._connection = new ConnectionWatcher({
      api: this.api,
      events: options.events,
      reconnectDelaysMs: options.reconnectDelaysMs,
      resyncDelaysMs: options.resyncDelaysMs,
      model: {
        workspace: () => this._workspace,
        passedBy: (workspace, name) => this._passedBy(workspace, name),
        isOffline: () => this._status === 'offline',
        isReady: () => this._status === 'ready',
        setOffline: error => this._setStatus('offline', error),
        showFailure: error => this._handleFailure(error),
        reload: listing => this._reload(listing),
        refresh: () => this.refresh(),
        refreshTarget: name => this.refreshTarget(name),
        removeTarget: name => this._remove(name, ++this._clock),
        markDeleting: name => this._patchState(name, 'deleting'),
        applyOperation: event => this._applyOperation(event)
      }
    });
  }

  readonly api: ComputeApi;

  /** Emitted whenever anything the sidebar shows has changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when a long operation fails, wherever it was started. */
  get operationFailed(): ISignal<this, IOperationFailure> {
    return this._operationFailed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  get status(): ModelStatus {
    return this._status;
  }

  /** The error that put the model in the `error` or `offline` status. */
  get error(): ComputeApiError | null {
    return this._error;
  }

  get workspaces(): readonly IWorkspace[] {
    return this._workspaces;
  }

  /** The Azure ML compute instance this server runs on, if it runs on one. */
  get thisInstance(): IWorkspaceListing['this_instance'] {
    return this._thisInstance;
  }

  /** Add an Azure ML workspace and show it. Rejects with the server's error, field included. */
  async addWorkspace(request: IAddWorkspaceRequest): Promise<IWorkspace> {
    const added = await this.api.addWorkspace(request);
    await this.refresh(added.id);
    return added;
  }

  /** Forget an added workspace; the panel goes back to the default one. */
  async removeWorkspace(id: string): Promise<void> {
    await this.api.removeWorkspace(id);
    const fallback = this._workspaces.find(w => w.default && w.id !== id);
    await this.refresh(fallback?.id ?? 'local');
  }

  get workspace(): string {
    return this._workspace;
  }

  get kinds(): ReadonlyMap<string, IKind> {
    return this._kinds;
  }

  get targets(): ReadonlyMap<string, ITarget> {
    return this._targets;
  }

  /** The selected target's name, which the start/stop commands act on. */
  get selected(): string | null {
    return this._view.selected;
  }

  set selected(name: string | null) {
    if (this._view.select(name)) {
      this._emit();
    }
  }

  /** Text that target names must contain to be listed; empty lists all. */
  get filter(): string {
    return this._view.filter;
  }

  set filter(value: string) {
    if (this._view.setFilter(value)) {
      this._groups = null;
      this._emit();
    }
  }

  isCollapsed(family: string): boolean {
    return this._view.isCollapsed(family);
  }

  setCollapsed(family: string, collapsed: boolean): void {
    if (this._view.setCollapsed(family, collapsed)) {
      this._emit();
    }
  }

  kindOf(target: ITarget): IKind | undefined {
    return this._kinds.get(target.kind);
  }

  familyOf(target: ITarget): string {
    return this._kinds.get(target.kind)?.family ?? OTHER_FAMILY;
  }

  /** The operation running on a target, if one is. */
  operation(name: string): ITargetOperation | undefined {
    return this._operations.get(name);
  }

  /** Whether a request from this sidebar is on its way for the target. */
  isBusy(name: string): boolean {
    return this._busy.has(name);
  }

  /** The targets grouped by family, in display order, filtered by `filter`. */
  get groups(): readonly ITargetGroup[] {
    if (!this._groups) {
      this._groups = this._computeGroups();
    }
    return this._groups;
  }

  /**
   * Load the workspaces, then the kinds and targets of `workspace` (by default the current
   * one). A workspace the server does not know gives way to the server's default.
   */
  async refresh(workspace?: string): Promise<void> {
    if (workspace && workspace !== this._workspace) {
      this._switchTo(workspace);
    }
    const generation = this._generation;
    if (this._status !== 'ready') {
      this._setStatus('loading', null);
    }
    try {
      const early = await this._takePrefetched(this._workspace);
      const listing = early?.listing ?? (await this.api.listWorkspaces());
      if (generation !== this._generation || this._isDisposed) {
        return;
      }
      const workspaces = listing.workspaces;
      this._workspaces = workspaces;
      this._thisInstance = listing.this_instance ?? null;
      if (
        workspaces.length > 0 &&
        !workspaces.some(w => w.id === this._workspace)
      ) {
        this._switchTo(defaultOf(listing)!.id);
      }
      const lists = early?.lists;
      await this._loadWorkspace(
        lists && lists.workspace === this._workspace
          ? { ...lists, stamp: early.stamp, missed: early.missed }
          : undefined
      );
    } catch (error) {
      this._handleFailure(error);
    }
  }

  /**
   * Start fetching the workspaces and the targets of the server's default workspace at once,
   * before JupyterLab has restored its layout and the settings are read: the first `refresh()`
   * that shows that workspace uses these answers instead of asking again, and fetches anew each
   * target an event named meanwhile. On a page busy with its start (thousands of kernelspecs to
   * read and show) the targets are then in when the panel opens.
   */
  prefetch(): void {
    if (this._prefetched || this._generation > 0) {
      return;
    }
    const listing = this.api.listWorkspaces();
    const lists = listing.then(async answer => {
      const chosen = defaultOf(answer);
      if (!chosen) {
        return null;
      }
      const [kinds, targets] = await Promise.all([
        this.api.listKinds(chosen.id),
        this.api.listTargets(chosen.id)
      ]);
      return { workspace: chosen.id, kinds, targets };
    });
    // A failure here is met again, and shown, by the refresh that asks anew.
    listing.catch(() => undefined);
    lists.catch(() => undefined);
    this._prefetched = {
      listing,
      lists,
      stamp: ++this._clock,
      missed: new Map()
    };
  }

  /** Show another workspace. */
  async setWorkspace(id: string): Promise<void> {
    if (id === this._workspace) {
      return;
    }
    this._switchTo(id);
    this._setStatus('loading', null);
    try {
      await this._loadWorkspace();
    } catch (error) {
      this._handleFailure(error);
    }
  }

  /**
   * Fetch one target again; a 404 removes it. Calls for the same target while one is on its
   * way are folded into one more fetch after it.
   */
  refreshTarget(name: string): Promise<void> {
    const generation = this._generation;
    const workspace = this._workspace;
    const key = `${generation}/${name}`;
    const running = this._fetching.get(key);
    if (running) {
      this._fetchAgain.add(key);
      return running;
    }
    const task = (async () => {
      try {
        do {
          this._fetchAgain.delete(key);
          const stamp = ++this._clock;
          try {
            const target = await this.api.getTarget(workspace, name);
            if (generation === this._generation) {
              this._apply(target, stamp);
            }
          } catch (error) {
            if (generation !== this._generation) {
              return;
            }
            if (error instanceof ComputeApiError && error.status === 404) {
              this._remove(name, stamp);
            } else {
              this._handleFailure(error);
              return;
            }
          }
        } while (
          this._fetchAgain.has(key) &&
          generation === this._generation &&
          !this._isDisposed
        );
      } finally {
        this._fetching.delete(key);
        this._fetchAgain.delete(key);
      }
    })();
    this._fetching.set(key, task);
    return task;
  }

  /** Create (or attach) a target. Rejects with the server's error, `field` included. */
  async createTarget(request: ITargetRequest): Promise<IOperation> {
    const workspace = this._workspace;
    const operation = await this.api.createTarget(workspace, request);
    if (workspace === this._workspace) {
      this._trackOperation(operation);
      void this.refreshTarget(request.name);
    }
    return operation;
  }

  /** Change some fields of a target (`PATCH`); shows the answer at once. Rejects with the server's error. */
  async updateTarget(
    name: string,
    changes: Record<string, unknown>
  ): Promise<ITarget> {
    const workspace = this._workspace;
    const stamp = ++this._clock;
    const target = await this.api.updateTarget(workspace, name, changes);
    if (workspace === this._workspace) {
      this._apply(target, stamp);
    }
    return target;
  }

  /**
   * Start, stop, restart or delete (detach) a target. `confirm` accepts the consequence a
   * `confirmation_required` answer named.
   */
  async run(
    name: string,
    action: TargetAction,
    options: IActionOptions = {}
  ): Promise<IOperation> {
    const workspace = this._workspace;
    this._busy.add(name);
    this._emit();
    try {
      let operation: IOperation;
      switch (action) {
        case 'start':
          operation = await this.api.startTarget(workspace, name);
          break;
        case 'stop':
          operation = await this.api.stopTarget(workspace, name, options);
          break;
        case 'restart':
          operation = await this.api.restartTarget(workspace, name, options);
          break;
        case 'delete':
          operation = await this.api.deleteTarget(workspace, name, options);
          break;
      }
      if (workspace === this._workspace) {
        this._trackOperation(operation);
        // The server marks the target before it answers: show that at once.
        this._patchState(name, TRANSITION[action]);
        if (action !== 'delete') {
          // Its removal comes as an event; anything else is fetched.
          void this.refreshTarget(name);
        }
      }
      return operation;
    } catch (error) {
      if (
        error instanceof ComputeApiError &&
        error.status === 404 &&
        workspace === this._workspace
      ) {
        void this.refreshTarget(name);
      }
      throw error;
    } finally {
      this._busy.delete(name);
      this._emit();
    }
  }

  /**
   * Wait until a target reaches one of `states` (resolves with it), or is removed or the
   * timeout passes (resolves with null).
   */
  waitForState(
    name: string,
    states: readonly string[],
    timeoutMs: number
  ): Promise<ITarget | null> {
    return new Promise(resolve => {
      const check = (): boolean => {
        const target = this._targets.get(name);
        if (target && states.includes(target.state)) {
          finish(target);
          return true;
        }
        return false;
      };
      const onChange = () => {
        check();
      };
      const timer = setTimeout(() => finish(null), timeoutMs);
      const finish = (value: ITarget | null) => {
        clearTimeout(timer);
        this._changed.disconnect(onChange);
        resolve(value);
      };
      if (!check()) {
        this._changed.connect(onChange);
      }
    });
  }

  /**
   * Notice server restarts: one cheap status request every few seconds while the page is
   * visible. A restart means events were missed, so the list is fetched again.
   */
  watchServer(intervalMs?: number): void {
    this._connection.watchServer(intervalMs);
  }

  /** The connection to the server was lost: show it, and try again until it answers. */
  connectionLost(error?: Error): void {
    this._connection.connectionLost(error);
  }

  /** Handle one event of Jupyter's event bus; events of other extensions are ignored. */
  handleEvent(event: IEventEmission): void {
    this._connection.handleEvent(event);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._connection.dispose();
    Signal.clearData(this);
  }

  /**
   * Track an operation an event told of. Its end is remembered, so that the answer to the
   * request that started it, arriving late, cannot show it running again.
   */
  private _applyOperation(event: IOperationEvent): void {
    const { target: name, id, action, status } = event;
    if (status === 'running') {
      this._operations.set(name, {
        id,
        action,
        status,
        progress: event.progress
      });
      this._emit();
      return;
    }
    if (id !== null) {
      this._ended.add(id);
      if (this._ended.size > ENDED_KEPT) {
        this._ended.delete(this._ended.values().next().value as string);
      }
    }
    const known = this._operations.get(name);
    if (!known || known.id === null || id === null || known.id === id) {
      this._operations.delete(name);
    }
    if (status === 'failed') {
      this._operationFailed.emit({
        workspace: this._workspace,
        target: name,
        action,
        message: event.error ?? `${action} of '${name}' failed`
      });
    }
    this._emit();
  }

  private _trackOperation(operation: IOperation): void {
    if (operation.status !== 'running') {
      return;
    }
    const known = this._operations.get(operation.target);
    // An event about this operation may have arrived before the response did, even its end.
    if ((known && known.id === operation.id) || this._ended.has(operation.id)) {
      return;
    }
    this._operations.set(operation.target, {
      id: operation.id,
      action: operation.action,
      status: operation.status,
      progress: operation.progress
    });
    this._emit();
  }

  private _switchTo(id: string): void {
    this._generation++;
    this._workspace = id;
    this._kinds = new Map();
    this._targets = new Map();
    this._stamps = new Map();
    this._operations = new Map();
    this._fetchAgain.clear();
    this._view.select(null);
    this._groups = null;
    this._emit();
  }

  private _passedBy(workspace: string, name: string): void {
    const missed = this._prefetched?.missed;
    if (missed) {
      missed.set(workspace, (missed.get(workspace) ?? new Set()).add(name));
    }
  }

  /**
   * The prefetched answers, once: null if there were none or they failed. Their lists are
   * waited for only when `shown` (the workspace about to be shown, or '' for the server's
   * default) is the workspace they are of.
   */
  private async _takePrefetched(shown: string): Promise<IEarlyAnswers | null> {
    const early = this._prefetched;
    if (!early) {
      return null;
    }
    try {
      const listing = await early.listing;
      const chosen = defaultOf(listing)?.id;
      let lists: IEarlyLists | null = null;
      if (chosen && (!shown || shown === chosen)) {
        lists = await early.lists.catch(() => null);
      }
      return {
        listing,
        lists,
        stamp: early.stamp,
        missed: (chosen && early.missed.get(chosen)) || new Set()
      };
    } catch {
      return null;
    } finally {
      // Events of the shown workspace are applied from now on.
      this._prefetched = null;
    }
  }

  private async _loadWorkspace(
    early?: IEarlyLists & { stamp: number; missed: ReadonlySet<string> }
  ): Promise<void> {
    const generation = this._generation;
    const workspace = this._workspace;
    const stamp = early?.stamp ?? ++this._clock;
    const [kinds, targets] = early
      ? [early.kinds, early.targets]
      : await Promise.all([
          this.api.listKinds(workspace),
          this.api.listTargets(workspace)
        ]);
    if (generation !== this._generation || this._isDisposed) {
      return;
    }
    this._kinds = new Map(kinds.map(k => [k.name, k]));
    const seen = new Set<string>();
    for (const target of targets) {
      seen.add(target.name);
      this._apply(target, stamp, false);
    }
    for (const name of Array.from(this._targets.keys())) {
      if (!seen.has(name)) {
        this._remove(name, stamp, false);
      }
    }
    this._groups = null;
    this._setStatus('ready', null);
    for (const name of early?.missed ?? []) {
      void this.refreshTarget(name);
    }
  }

  /** Keep a target unless what we hold was fetched after this copy was asked for. */
  private _apply(target: ITarget, stamp: number, emit = true): void {
    if ((this._stamps.get(target.name) ?? -1) > stamp) {
      return;
    }
    this._stamps.set(target.name, stamp);
    this._targets.set(target.name, target);
    this._groups = null;
    if (emit) {
      this._emit();
    }
  }

  /** Set a known target's state from what an event or answer said; false if unknown. */
  private _patchState(name: string, state: TargetState): boolean {
    const target = this._targets.get(name);
    if (!target) {
      return false;
    }
    if (target.state !== state) {
      this._apply({ ...target, state }, ++this._clock);
    }
    return true;
  }

  private _remove(name: string, stamp: number, emit = true): void {
    if ((this._stamps.get(name) ?? -1) > stamp) {
      return;
    }
    // The stamp stays as a tombstone, so an older listing cannot bring the target back.
    this._stamps.set(name, stamp);
    const had = this._targets.delete(name);
    this._operations.delete(name);
    if (this._view.selected === name) {
      this._view.select(null);
    }
    if (had) {
      this._groups = null;
      if (emit) {
        this._emit();
      }
    }
  }

  private _computeGroups(): ITargetGroup[] {
    const byFamily = new Map<string, ITargetGroup>();
    const group = (family: string): ITargetGroup => {
      let g = byFamily.get(family);
      if (!g) {
        g = { family, kinds: [], targets: [] };
        byFamily.set(family, g);
      }
      return g;
    };
    for (const kind of this._kinds.values()) {
      group(kind.family).kinds.push(kind);
    }
    const view = this._view;
    for (const target of this._targets.values()) {
      if (view.matches(target.name)) {
        group(this.familyOf(target)).targets.push(target);
      }
    }
    const collator = new Intl.Collator(undefined, {
      numeric: true,
      sensitivity: 'base'
    });
    const rank = (family: string): number => {
      const i = FAMILY_ORDER.indexOf(family);
      return i === -1 ? FAMILY_ORDER.length : i;
    };
    const groups = Array.from(byFamily.values()).filter(
      g => !view.isFiltering || g.targets.length > 0
    );
    groups.sort(
      (a, b) =>
        rank(a.family) - rank(b.family) || collator.compare(a.family, b.family)
    );
    for (const g of groups) {
      g.targets.sort((a, b) => collator.compare(a.name, b.name));
    }
    return groups;
  }

  private _handleFailure(error: unknown): void {
    if (this._isDisposed) {
      return;
    }
    if (error instanceof ComputeApiError && error.isNetworkError) {
      this._connection.connectionLost(error);
      return;
    }
    const apiError =
      error instanceof ComputeApiError
        ? error
        : new ComputeApiError({
            message: (error as Error)?.message ?? String(error),
            status: 0,
            reason: 'client_error'
          });
    if (this._status === 'ready') {
      // The list is still good; one failed fetch is not worth hiding it.
      this._error = apiError;
      this._emit();
    } else {
      this._setStatus('error', apiError);
    }
  }

  /** Take a fresh listing and load everything again, in a generation of its own. */
  private async _reload(listing: IWorkspaceListing): Promise<void> {
    this._workspaces = listing.workspaces;
    this._thisInstance = listing.this_instance ?? null;
    this._generation++;
    await this._loadWorkspace();
  }

  private _setStatus(status: ModelStatus, error: ComputeApiError | null): void {
    this._status = status;
    this._error = error;
    this._emit();
  }

  private _emit(): void {
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  private _changed = new Signal<this, void>(this);
  private _operationFailed = new Signal<this, IOperationFailure>(this);
  private _connection: ConnectionWatcher;
  private _view: ViewState;
  private _isDisposed = false;
  private _status: ModelStatus = 'loading';
  private _error: ComputeApiError | null = null;
  private _workspaces: IWorkspace[] = [];
  private _thisInstance: IWorkspaceListing['this_instance'] = null;
  private _workspace: string;
  private _kinds = new Map<string, IKind>();
  private _targets = new Map<string, ITarget>();
  private _operations = new Map<string, ITargetOperation>();
  /** Operations whose end was announced, newest last: a late 202 must not revive them. */
  private _ended = new Set<string>();
  private _busy = new Set<string>();
  private _stamps = new Map<string, number>();
  private _clock = 0;
  private _prefetched: IPrefetched | null = null;
  private _generation = 0;
  private _fetching = new Map<string, Promise<void>>();
  private _fetchAgain = new Set<string>();
  private _groups: ITargetGroup[] | null = null;
}

export namespace ComputeModel {
  export interface IOptions {
    api: ComputeApi;
    /** JupyterLab's event stream (`serviceManager.events.stream`). */
    events?: ISignal<unknown, IEventEmission>;
    /** The workspace shown first. */
    workspace?: string;
    /** Families whose group starts collapsed. */
    collapsed?: readonly string[];
    /** Waits between attempts to reach a server that went away. */
    reconnectDelaysMs?: readonly number[];
    /** When to fetch the list again after the server came back. */
    resyncDelaysMs?: readonly number[];
  }
}
