/**
 * Which target a notebook's cells run on. Choosing one loads the magics in the notebook's
 * kernel if it has not, and runs `%compute use NAME` there, silently; the choice is kept in
 * the notebook's metadata and offered back when the notebook is opened again.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import type { ComputeController } from './controller';
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

export type RouterStatus = 'idle' | 'starting' | 'routing';

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

/** The route of one notebook. */
export class NotebookRouter implements IDisposable {
  constructor(options: NotebookRouter.IOptions) {
    this.panel = options.panel;
    this.model = options.model;
    this.controller = options.controller;
    const session = this.panel.sessionContext;
    session.kernelChanged.connect(this._onKernelReset, this);
    session.statusChanged.connect(this._onStatus, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    void this._start();
  }

  readonly panel: NotebookPanel;
  readonly model: ComputeModel;
  readonly controller: ComputeController;

  /** The target the kernel's cells run on now. */
  get current(): string {
    return this._current;
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
   * Route the notebook's cells to `name` (or back to `local`). Offers to start a stopped
   * target first. Resolves with whether the route changed.
   */
  async choose(name: string, workspace?: string): Promise<boolean> {
    if (this._status !== 'idle' || name === this._current) {
      return false;
    }
    workspace = workspace ?? this.model.workspace;
    let code: string;
    try {
      code = routeCode(name, workspace);
    } catch (error) {
      Notification.error(messageOf(error), { autoClose: 8000 });
      return false;
    }
    if (name !== LOCAL && workspace === this.model.workspace) {
      const ready = await this._ensureRunning(name);
      if (!ready) {
        return false;
      }
    }
    this._setStatus('routing');
    try {
      await this._route(code);
    } catch (error) {
      this._setStatus('idle');
      Notification.error(
        `Could not route this notebook's cells to '${name}': ${messageOf(error)}`,
        { autoClose: 10000 }
      );
      return false;
    }
    this._current = name;
    this._restoreNotice?.dismiss();
    const notebook = this.panel.model;
    if (notebook) {
      if (name === LOCAL) {
        notebook.deleteMetadata(METADATA_KEY);
      } else {
        notebook.setMetadata(METADATA_KEY, { target: name, workspace });
      }
    }
    this._setStatus('idle');
    return true;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    NotebookActions.executed.disconnect(this._onExecuted, this);
    this._restoreNotice?.dismiss();
    Signal.clearData(this);
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
        this._setStatus('idle');
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
    this._setStatus('idle');
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
  private async _route(code: string): Promise<void> {
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

  /** Show the kernel's actual route (the user may have typed `%compute use` too). */
  private async _sync(): Promise<void> {
    if (this._status !== 'idle' || !this.panel.sessionContext.session?.kernel) {
      return;
    }
    const route = await this._askKernel();
    if (route && route !== this._current && !this._isDisposed) {
      this._current = route;
      this._changed.emit();
    }
  }

  private async _start(): Promise<void> {
    await this.panel.context.ready;
    await this.panel.sessionContext.ready;
    if (this._isDisposed) {
      return;
    }
    await this._sync();
    // The first kernel's own start is not a restart to offer again for.
    this._offerWhenIdle = false;
    this._offerRestore();
  }

  /** A restarted or changed kernel runs its cells itself again. */
  private _onKernelReset(): void {
    if (this._current !== LOCAL) {
      this._current = LOCAL;
      this._changed.emit();
    }
    // A restart is told more than once (status, kernel); offer once the new kernel is idle.
    this._offerWhenIdle = true;
  }

  private _onStatus(_: unknown, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this._onKernelReset();
    } else if (status === 'idle' && this._offerWhenIdle) {
      this._offerWhenIdle = false;
      this._offerRestore();
    }
  }

  private _onExecuted(
    _: unknown,
    args: { notebook: Notebook; cell: Cell }
  ): void {
    if (
      args.notebook === this.panel.content &&
      args.cell.model.sharedModel.getSource().includes('%compute')
    ) {
      void this._sync();
    }
  }

  /** Offer to route the cells where the notebook's metadata says they ran last time. */
  private _offerRestore(): void {
    if (this._isDisposed || !this.controller.settings.offerRestore) {
      return;
    }
    const saved = readRoute(this.panel);
    if (!saved || saved.target === LOCAL || saved.target === this._current) {
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
            caption: `Route this notebook's cells to ${name}`,
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

  private _setStatus(status: RouterStatus): void {
    this._status = status;
    this._changed.emit();
  }

  private _current = LOCAL;
  private _status: RouterStatus = 'idle';
  private _changed = new Signal<this, void>(this);
  private _isDisposed = false;
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
  }
}
