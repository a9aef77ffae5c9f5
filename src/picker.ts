/**
 * Which target a notebook's next cell runs on, and the toolbar picker's way of changing it. A
 * target that hosts kernels gets the notebook's kernel (its kernelspec); any other target is
 * reached through the notebook's ordinary kernel, which runs `%compute use NAME` silently. The
 * choice is kept in the notebook's metadata and offered back when the notebook is opened again.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { IChangedArgs } from '@jupyterlab/coreutils';
import { Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage, KernelSpec } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { IPlan, PickerActivity, planChoice } from './choice';
import type { ComputeController } from './controller';
import { KERNEL_KINDS, kernelSpecFor, targetOfKernel } from './kernelspecs';
import type { ComputeModel } from './model';
import { messageOf } from './request';
import {
  IRouteMetadata,
  LOAD_CODE,
  LOCAL,
  METADATA_KEY,
  PROBE_EXPRESSION,
  ROUTE_EXPRESSION,
  parseRouteAnswer,
  routeCode
} from './route';
import { canRun, isTransitional } from './state';

export { LOCAL, METADATA_KEY } from './route';

/** How long to wait for a target to start before giving up on routing to it. */
const START_TIMEOUT_MS = 300_000;

/**
 * How long after a cell ran, or a widget's message was handled, the kernel is asked where it
 * routes cells: a burst of them (Run All, a slider being dragged) asks once.
 */
const SYNC_DELAY_MS = 100;

/** Kernel states in which the notebook's kernel is still on its way. */
const KERNEL_COMING: ReadonlySet<string> = new Set([
  'starting',
  'initializing',
  'restarting',
  'autorestarting'
]);

export type RouterStatus = PickerActivity;

/** Read the saved route of a notebook, if it has a valid one. */
export function readRoute(panel: NotebookPanel): IRouteMetadata | null {
  const value = panel.model?.getMetadata(METADATA_KEY) as
    | Record<string, unknown>
    | undefined;
  if (!value || typeof value !== 'object' || typeof value.target !== 'string') {
    return null;
  }
  return {
    target: value.target,
    workspace: typeof value.workspace === 'string' ? value.workspace : undefined
  };
}

/** Where one notebook's next cell runs, and the way there. */
export class NotebookRouter implements IDisposable {
  constructor(options: NotebookRouter.IOptions) {
    this.panel = options.panel;
    this.model = options.model;
    this.controller = options.controller;
    this.specs = options.specs;
    const session = this.panel.sessionContext;
    session.kernelChanged.connect(this._onKernelChanged, this);
    session.statusChanged.connect(this._onStatus, this);
    session.iopubMessage.connect(this._onIopub, this);
    this.specs.specsChanged.connect(this._onSpecsChanged, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    void this._start();
  }

  readonly panel: NotebookPanel;
  readonly model: ComputeModel;
  readonly controller: ComputeController;
  readonly specs: KernelSpec.IManager;

  /**
   * The target the next cell runs on: the one being changed to, else where the kernel's magics
   * route cells, else the target of the notebook's kernel, else `local`.
   */
  get current(): string {
    if (this._pending !== null) {
      return this._pending;
    }
    if (this._routed !== LOCAL) {
      return this._routed;
    }
    return this.kernelTarget ?? LOCAL;
  }

  /** The kernelspec of the notebook's kernel, or of the kernel it is being started with. */
  get kernelName(): string | null {
    const context = this.panel.sessionContext;
    const kernel = context.session?.kernel;
    const coming = this._kernelComing(false);
    if (!coming) {
      return kernel?.name ?? null;
    }
    // A kernel on its way has no connection yet; JupyterLab shows its display name.
    const shown = context.kernelDisplayName;
    for (const [name, spec] of Object.entries(
      this.specs.specs?.kernelspecs ?? {}
    )) {
      if (spec?.display_name === shown) {
        return name;
      }
    }
    return kernel?.name ?? context.kernelPreference.name ?? null;
  }

  /** The target the notebook's kernel runs on, when its kernelspec is a target's. */
  get kernelTarget(): string | null {
    return targetOfKernel(this.specs.specs, this.kernelName)?.target ?? null;
  }

  /** The kernelspec to go back to when the notebook leaves a target's kernel. */
  get ordinaryKernel(): string {
    const specs = this.specs.specs;
    const ordinary = (name: string | null | undefined): name is string =>
      !!name && !!specs?.kernelspecs[name] && !targetOfKernel(specs, name);
    if (ordinary(this._ordinary)) {
      return this._ordinary;
    }
    if (ordinary(specs?.default)) {
      return specs.default;
    }
    const other = Object.keys(specs?.kernelspecs ?? {}).find(ordinary);
    return other ?? this._ordinary ?? specs?.default ?? 'python3';
  }

  /**
   * The target being started for this notebook: by the picker before it routes there, or by
   * the notebook's kernel, which starts its stopped target before it starts itself.
   */
  get startingTarget(): string | null {
    if (this._status === 'starting') {
      return this._pending;
    }
    const target = this.kernelTarget;
    if (!target || !this._kernelComing(true)) {
      return null;
    }
    const operation = this.model.operation(target);
    const starting =
      (operation?.action === 'start' && operation.status === 'running') ||
      this.model.targets.get(target)?.state === 'starting';
    return starting ? target : null;
  }

  /** Whether the target offers a kernel for notebooks, as far as the kernelspecs say. */
  hasKernel(name: string): boolean {
    return kernelSpecFor(this.specs.specs, this.model.workspace, name) !== null;
  }

  get status(): RouterStatus {
    return this._status;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Have the notebook's next cell run on `name` (or back in its ordinary kernel for `local`).
   * Offers to start a stopped target first. Resolves with whether anything changed.
   */
  async choose(name: string, workspace?: string): Promise<boolean> {
    if (this._status !== 'idle' || name === this.current) {
      return false;
    }
    workspace = workspace ?? this.model.workspace;
    try {
      // Names come from notebook metadata too, which anyone may have written.
      routeCode(name, workspace);
    } catch (error) {
      Notification.error(messageOf(error), { autoClose: 8000 });
      return false;
    }
    const kind =
      workspace === this.model.workspace
        ? (this.model.targets.get(name)?.kind ?? null)
        : null;
    if (
      kind !== null &&
      KERNEL_KINDS.has(kind) &&
      !kernelSpecFor(this.specs.specs, workspace, name)
    ) {
      // A target created a moment ago: its kernelspec may be written but not read yet.
      await this.specs.refreshSpecs().catch(() => undefined);
    }
    const plan = this._plan(name, workspace, kind);
    if (!plan) {
      return false;
    }
    this._pending = name;
    this._emitIfChanged();
    try {
      return await this._carryOut(plan, name, workspace);
    } finally {
      this._pending = null;
      this._setStatus('idle');
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    if (this._syncTimer !== null) {
      clearTimeout(this._syncTimer);
      this._syncTimer = null;
    }
    NotebookActions.executed.disconnect(this._onExecuted, this);
    this._restoreNotice?.dismiss();
    Signal.clearData(this);
  }

  private _plan(
    name: string,
    workspace: string,
    kind: string | null
  ): IPlan | null {
    const kernel = this.kernelName;
    return planChoice({
      choice: name,
      kind,
      choiceKernel:
        name === LOCAL
          ? null
          : kernelSpecFor(this.specs.specs, workspace, name),
      kernel,
      kernelTarget: targetOfKernel(this.specs.specs, kernel)?.target ?? null,
      route: this._routed,
      ordinaryKernel: this.ordinaryKernel
    });
  }

  private async _carryOut(
    plan: IPlan,
    name: string,
    workspace: string
  ): Promise<boolean> {
    const toTarget =
      plan.kernel !== undefined &&
      targetOfKernel(this.specs.specs, plan.kernel) !== null;
    if (name !== LOCAL && workspace === this.model.workspace) {
      const ready = toTarget
        ? await this._confirmStart(name)
        : plan.route !== undefined
          ? await this._ensureRunning(name)
          : true;
      if (!ready) {
        return false;
      }
    }
    if (plan.kernel !== undefined) {
      this._setStatus('switching');
      try {
        await this.panel.sessionContext.changeKernel({ name: plan.kernel });
      } catch {
        // JupyterLab itself says why the kernel did not start.
        return false;
      }
      if (this._isDisposed) {
        return false;
      }
    }
    if (plan.route !== undefined) {
      this._setStatus('routing');
      try {
        await this._sendRoute(routeCode(plan.route, workspace));
      } catch (error) {
        Notification.error(
          `Could not route this notebook's cells to '${name}': ${messageOf(error)}`,
          { autoClose: 10000 }
        );
        return false;
      }
      this._routed = plan.route;
    }
    this._restoreNotice?.dismiss();
    const notebook = this.panel.model;
    if (notebook) {
      if (name === LOCAL) {
        notebook.deleteMetadata(METADATA_KEY);
      } else {
        notebook.setMetadata(METADATA_KEY, { target: name, workspace });
      }
    }
    return true;
  }

  /**
   * Ask before a target's kernel starts its stopped target (starting one may cost); the kernel
   * then starts it itself. False when the person declines or it cannot be started.
   */
  private async _confirmStart(name: string): Promise<boolean> {
    const target = this.model.targets.get(name);
    if (!target || target.state === 'running' || isTransitional(target.state)) {
      return true;
    }
    if (!canRun(target, this.model.kindOf(target), 'start')) {
      Notification.warning(
        `'${name}' is ${target.state} and cannot be started here.`,
        { autoClose: 8000 }
      );
      return false;
    }
    const answer = await showDialog({
      title: `Start '${name}'?`,
      body: `'${name}' is ${target.state}. Start it and run this notebook's kernel there?`,
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: 'Start', ariaLabel: `Start ${name}` })
      ]
    });
    return answer.button.accept && !this._isDisposed;
  }

  /** Make sure the target runs, offering to start it; false when it does not. */
  private async _ensureRunning(name: string): Promise<boolean> {
    const target = this.model.targets.get(name);
    if (!target) {
      // Not listed yet: the magic checks the target itself and says what is wrong.
      return true;
    }
    if (target.state === 'running') {
      return true;
    }
    if (!isTransitional(target.state)) {
      if (!canRun(target, this.model.kindOf(target), 'start')) {
        Notification.warning(
          `'${name}' is ${target.state} and cannot be started here.`,
          {
            autoClose: 8000
          }
        );
        return false;
      }
      const answer = await showDialog({
        title: `Start '${name}'?`,
        body: `'${name}' is ${target.state}. Start it and run this notebook's cells there?`,
        buttons: [
          Dialog.cancelButton(),
          Dialog.okButton({ label: 'Start', ariaLabel: `Start ${name}` })
        ]
      });
      if (!answer.button.accept || this._isDisposed) {
        return false;
      }
      this._setStatus('starting');
      try {
        await this.model.run(name, 'start');
      } catch (error) {
        Notification.error(`Starting '${name}' failed: ${messageOf(error)}`, {
          autoClose: 10000
        });
        return false;
      }
    } else {
      this._setStatus('starting');
    }
    const reached = await this.model.waitForState(
      name,
      ['running', 'failed', 'stopped'],
      START_TIMEOUT_MS
    );
    if (reached?.state !== 'running') {
      Notification.error(
        reached
          ? `'${name}' did not start: it is ${reached.state}.`
          : `'${name}' did not start in time.`,
        { autoClose: 10000 }
      );
      return false;
    }
    return true;
  }

  /** Load the magics if the kernel has not, then run the routing magic; all silently. */
  private async _sendRoute(code: string): Promise<void> {
    if (!(await this._hasMagics())) {
      await this._execute(LOAD_CODE);
      if (!(await this._hasMagics())) {
        throw new Error(
          "the kernel could not load the jupyter_compute magics: is jupyter_compute installed in the kernel's environment?"
        );
      }
    }
    await this._execute(code);
  }

  private async _hasMagics(): Promise<boolean> {
    const probe = await this._execute('', { loaded: PROBE_EXPRESSION });
    const answer = probe.user_expressions?.loaded as
      | { status?: string; data?: Record<string, unknown>; evalue?: string }
      | undefined;
    if (!answer || answer.status !== 'ok') {
      throw new Error(
        `this kernel cannot run the jupyter_compute magics${
          answer?.evalue ? ` (${answer.evalue})` : ''
        }`
      );
    }
    return answer.data?.['text/plain'] === 'True';
  }

  private async _execute(
    code: string,
    expressions: Record<string, string> = {}
  ): Promise<{ user_expressions?: Record<string, unknown> }> {
    const kernel = this.panel.sessionContext.session?.kernel;
    if (!kernel) {
      throw new Error('the notebook has no kernel');
    }
    const future = kernel.requestExecute({
      code,
      silent: true,
      store_history: false,
      allow_stdin: false,
      stop_on_error: false,
      user_expressions: expressions
    });
    let failure = '';
    future.onIOPub = (msg: KernelMessage.IIOPubMessage) => {
      if (KernelMessage.isErrorMsg(msg)) {
        failure = `${msg.content.ename}: ${msg.content.evalue}`;
      }
    };
    const reply = await future.done;
    const content = reply.content as {
      status: string;
      ename?: string;
      evalue?: string;
      user_expressions?: Record<string, unknown>;
    };
    if (content.status !== 'ok') {
      throw new Error(
        failure ||
          (content.ename
            ? `${content.ename}: ${content.evalue}`
            : content.status)
      );
    }
    return content;
  }

  /** Where the kernel routes its cells now, asked silently; null if it cannot say. */
  private async _askKernel(): Promise<string | null> {
    try {
      const reply = await this._execute('', { route: ROUTE_EXPRESSION });
      return parseRouteAnswer(reply.user_expressions?.route);
    } catch {
      return null;
    }
  }

  /** Show the kernel's actual route: `%compute use` in a cell or a widget may have changed it. */
  private async _sync(): Promise<void> {
    if (this._status !== 'idle' || !this.panel.sessionContext.session?.kernel) {
      return;
    }
    const route = await this._askKernel();
    if (
      route &&
      route !== this._routed &&
      this._status === 'idle' &&
      !this._isDisposed
    ) {
      this._routed = route;
      this._emitIfChanged();
    }
  }

  private _scheduleSync(): void {
    if (this._isDisposed) {
      return;
    }
    if (this._syncTimer !== null) {
      clearTimeout(this._syncTimer);
    }
    this._syncTimer = setTimeout(() => {
      this._syncTimer = null;
      void this._sync();
    }, SYNC_DELAY_MS);
  }

  private async _start(): Promise<void> {
    await this.panel.context.ready;
    await this.panel.sessionContext.ready;
    // Whether the kernel is a target's is read from the kernelspecs.
    await this.specs.ready;
    if (this._isDisposed) {
      return;
    }
    this._noteOrdinary();
    this._emitIfChanged();
    await this._sync();
    // The first kernel's own start is not a restart to offer again for.
    this._offerWhenIdle = false;
    this._offerRestore();
  }

  /** Keep the name of an ordinary kernel the notebook had, to go back to from a target's. */
  private _noteOrdinary(): void {
    const name = this.panel.sessionContext.session?.kernel?.name;
    if (name && this.specs.specs && !targetOfKernel(this.specs.specs, name)) {
      this._ordinary = name;
    }
  }

  /** A new kernel routes nowhere: its cells run where its kernelspec says. */
  private _onKernelChanged(
    _: unknown,
    args: IChangedArgs<
      Kernel.IKernelConnection | null,
      Kernel.IKernelConnection | null,
      'kernel'
    >
  ): void {
    this._routed = LOCAL;
    this._noteOrdinary();
    if (this._status === 'idle') {
      // Changed elsewhere (JupyterLab's kernel picker): the metadata follows the kernel.
      if (args.oldValue && args.newValue) {
        this._followKernel(args.oldValue.name, args.newValue.name);
      }
      this._offerWhenIdle = true;
    }
    this._emitIfChanged();
  }

  /** Record a target's kernel as the notebook's target, and forget one the notebook left. */
  private _followKernel(before: string, after: string): void {
    const notebook = this.panel.model;
    if (!notebook) {
      return;
    }
    const left = targetOfKernel(this.specs.specs, before);
    const joined = targetOfKernel(this.specs.specs, after);
    if (joined) {
      notebook.setMetadata(METADATA_KEY, {
        target: joined.target,
        workspace: joined.workspace
      });
    } else if (left && readRoute(this.panel)?.target === left.target) {
      notebook.deleteMetadata(METADATA_KEY);
    }
  }

  private _onStatus(_: unknown, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      // A restarted kernel routes nowhere; a target's kernel stays on its target.
      this._routed = LOCAL;
      // A restart is told more than once (status, kernel); offer once the new kernel is idle.
      this._offerWhenIdle = true;
    } else if (status === 'idle' && this._offerWhenIdle) {
      this._offerWhenIdle = false;
      this._offerRestore();
    }
    this._emitIfChanged();
  }

  /** A widget's message was handled: a `TargetPicker` widget may have changed the route. */
  private _onIopub(_: unknown, msg: KernelMessage.IMessage): void {
    if (
      msg.header.msg_type === 'status' &&
      (msg.content as { execution_state?: string }).execution_state ===
        'idle' &&
      (msg.parent_header as { msg_type?: string } | undefined)?.msg_type ===
        'comm_msg'
    ) {
      this._scheduleSync();
    }
  }

  /** Any cell may change the route: `%compute use`, or the Python API behind it. */
  private _onExecuted(
    _: unknown,
    args: { notebook: Notebook; cell: Cell }
  ): void {
    if (args.notebook === this.panel.content) {
      this._scheduleSync();
    }
  }

  /** Offer to run the cells where the notebook's metadata says they ran last time. */
  private _offerRestore(): void {
    if (
      this._isDisposed ||
      this._status !== 'idle' ||
      !this.specs.specs ||
      !this.controller.settings.offerRestore
    ) {
      return;
    }
    const saved = readRoute(this.panel);
    if (!saved || saved.target === LOCAL || saved.target === this.current) {
      return;
    }
    if (!this.panel.sessionContext.session?.kernel) {
      return;
    }
    if (this._restoreNotice?.isShown()) {
      return;
    }
    const name = saved.target;
    const workspace = saved.workspace ?? this.model.workspace;
    const id = Notification.info(
      `${this.panel.title.label} ran its cells on '${name}'. Run them there again?`,
      {
        autoClose: false,
        actions: [
          {
            label: `Use ${name}`,
            caption: `Run this notebook's cells on ${name}`,
            callback: () => {
              void this.choose(name, workspace);
            }
          },
          {
            label: 'Stay local',
            caption: "Keep running cells in the notebook's own kernel",
            displayType: 'link',
            callback: () => undefined
          }
        ]
      }
    );
    this._restoreNotice = {
      dismiss: () => Notification.dismiss(id),
      isShown: () => Notification.manager.has(id)
    };
  }

  /** Whether the notebook's kernel is on its way; `restarts` counts a restart as such. */
  private _kernelComing(restarts: boolean): boolean {
    if (this._status === 'switching') {
      return true;
    }
    const status = this.panel.sessionContext.kernelDisplayStatus;
    if (!restarts && (status === 'restarting' || status === 'autorestarting')) {
      return false;
    }
    return KERNEL_COMING.has(status);
  }

  private _setStatus(status: RouterStatus): void {
    this._status = status;
    this._emitIfChanged();
  }

  /** Which targets offer a kernel, and which kernel is a target's, may have changed. */
  private _onSpecsChanged(): void {
    if (!this._isDisposed) {
      this._shown = '';
      this._emitIfChanged();
    }
  }

  /** Tell the picker only when what it shows may have changed: kernel messages are many. */
  private _emitIfChanged(): void {
    if (this._isDisposed) {
      return;
    }
    const shown = [
      this.current,
      this._status,
      this.kernelName,
      this._kernelComing(true)
    ].join('\n');
    if (shown !== this._shown) {
      this._shown = shown;
      this._changed.emit();
    }
  }

  private _routed = LOCAL;
  private _pending: string | null = null;
  private _ordinary: string | null = null;
  private _status: RouterStatus = 'idle';
  private _shown = '';
  private _changed = new Signal<this, void>(this);
  private _isDisposed = false;
  private _syncTimer: ReturnType<typeof setTimeout> | null = null;
  private _restoreNotice: {
    dismiss: () => void;
    isShown: () => boolean;
  } | null = null;
  private _offerWhenIdle = false;
}

export namespace NotebookRouter {
  export interface IOptions {
    panel: NotebookPanel;
    model: ComputeModel;
    controller: ComputeController;
    /** JupyterLab's kernelspecs (`serviceManager.kernelspecs`). */
    specs: KernelSpec.IManager;
  }
}
