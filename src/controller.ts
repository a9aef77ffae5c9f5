/**
 * What the sidebar's buttons and the commands do: confirm destructive actions as the settings
 * ask, run them through the model, open the dialogs and the details view, and tell the user
 * when something fails.
 */
import {
  Dialog,
  InputDialog,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  CreateMode,
  kindsFor,
  showCreateDialog
} from './components/CreateDialog';
import { showAddWorkspaceDialog } from './components/WorkspaceDialog';
import type { ComputeModel, IOperationFailure } from './model';
import { ComputeApiError, messageOf } from './request';
import { DEFAULT_SETTINGS, IComputeSettings } from './settings';
import { TargetAction, actionLabel, canRun } from './state';

export class ComputeController implements IDisposable {
  constructor(options: ComputeController.IOptions) {
    this.model = options.model;
    this._openDetails = options.openDetails;
    this._openTab = options.openTab;
    this.model.operationFailed.connect(this._onOperationFailed, this);
  }

  readonly model: ComputeModel;

  get settings(): IComputeSettings {
    return this._settings;
  }

  set settings(value: IComputeSettings) {
    this._settings = value;
    this._settingsChanged.emit(value);
  }

  get settingsChanged(): ISignal<this, IComputeSettings> {
    return this._settingsChanged;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Whether `action` can be taken on the target now. */
  canRun(name: string | null, action: TargetAction): boolean {
    if (!name || this.model.isBusy(name)) {
      return false;
    }
    const target = this.model.targets.get(name);
    return !!target && canRun(target, this.model.kindOf(target), action);
  }

  /**
   * Start, stop, restart or delete a target, asking first where the settings say so.
   * Resolves with false when the user declined or the server refused.
   */
  async run(name: string, action: TargetAction): Promise<boolean> {
    const target = this.model.targets.get(name);
    if (!target) {
      return false;
    }
    const label = actionLabel(target, action);
    // On the compute instance this server runs on, the server itself names the consequence
    // and asks for it to be accepted (see `_runConfirmed`): asking here too would ask twice.
    // The rule of every face: a delete, and a stop or restart that loses a kernel's variables.
    const losesVariables =
      target.state === 'running' &&
      this.model.kindOf(target)?.keeps_variables === true;
    const ask =
      target.properties?.this_instance !== true &&
      ((action === 'delete' && this._settings.confirmDelete) ||
        ((action === 'stop' || action === 'restart') &&
          losesVariables &&
          this._settings.confirmStop));
    if (ask) {
      const result = await showDialog({
        title: `${label} '${name}'?`,
        body: confirmationText(action, name, target.managed),
        buttons: [
          Dialog.cancelButton(),
          action === 'delete' || action === 'stop'
            ? Dialog.warnButton({ label, ariaLabel: `${label} ${name}` })
            : Dialog.okButton({ label, ariaLabel: `${label} ${name}` })
        ],
        defaultButton: 0
      });
      if (!result.button.accept) {
        return false;
      }
    }
    try {
      await this.model.run(name, action);
      return true;
    } catch (error) {
      if (
        error instanceof ComputeApiError &&
        error.reason === 'confirmation_required'
      ) {
        return this._runConfirmed(name, action, label, error);
      }
      Notification.error(`${label} '${name}' failed: ${messageOf(error)}`, {
        autoClose: 8000
      });
      return false;
    }
  }

  /**
   * The server refused an action until its consequence is accepted (stopping the compute
   * instance this session runs on ends the session): show that consequence, and send the
   * action again with `confirm` only once the person chose to go ahead.
   */
  private async _runConfirmed(
    name: string,
    action: TargetAction,
    label: string,
    refusal: ComputeApiError
  ): Promise<boolean> {
    const consequence = refusal.details?.consequence;
    const result = await showDialog({
      title: `${label} '${name}'?`,
      body: typeof consequence === 'string' ? consequence : refusal.message,
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({
          label: `${label} and end this session`,
          ariaLabel: `${label} ${name} and end this session`
        })
      ],
      defaultButton: 0
    });
    if (!result.button.accept) {
      return false;
    }
    try {
      await this.model.run(name, action, { confirm: true });
      return true;
    } catch (error) {
      Notification.error(`${label} '${name}' failed: ${messageOf(error)}`, {
        autoClose: 8000
      });
      return false;
    }
  }

  /** Open the create (or attach) dialog; selects the new target once it exists. */
  async create(mode: CreateMode, kind?: string): Promise<string | null> {
    const name = await showCreateDialog(this.model, mode, kind);
    if (name) {
      this.model.selected = name;
    }
    return name;
  }

  /** Whether the workspace has a kind the dialog could offer. */
  canCreate(mode: CreateMode): boolean {
    return kindsFor(this.model, mode).length > 0;
  }

  /** Add an Azure ML workspace through its dialog; the panel then shows it. */
  addWorkspace(): Promise<string | null> {
    return showAddWorkspaceDialog(this.model);
  }

  /** Forget an added workspace, after asking. */
  async removeWorkspace(id: string): Promise<boolean> {
    const result = await showDialog({
      title: `Remove workspace '${id}'?`,
      body: `'${id}' is removed from this list. Its compute in Azure is left as it is.`,
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Remove', ariaLabel: `Remove ${id}` })
      ],
      defaultButton: 0
    });
    if (!result.button.accept) {
      return false;
    }
    try {
      await this.model.removeWorkspace(id);
      return true;
    } catch (error) {
      Notification.error(`Removing '${id}' failed: ${messageOf(error)}`, {
        autoClose: 8000
      });
      return false;
    }
  }

  /**
   * Open a page the Jupyter server serves (a dashboard through its proxy) in a JupyterLab tab;
   * in a browser tab where the shell cannot hold one.
   */
  openInTab(url: string, label: string): void {
    if (this._openTab) {
      this._openTab(url, label);
    } else {
      window.open(url, '_blank', 'noopener');
    }
  }

  openDetails(name: string): void {
    this._openDetails(name);
  }

  /**
   * Ask for a stopped target's new name and rename it; its kernel follows. Resolves with the
   * new name, or null when the user gave none or the server refused (it says why).
   */
  async rename(name: string): Promise<string | null> {
    const answer = await InputDialog.getText({
      title: `Rename '${name}'`,
      label: 'New name',
      text: name,
      okLabel: 'Rename'
    });
    const newName = (answer.value ?? '').trim();
    if (!answer.button.accept || !newName || newName === name) {
      return null;
    }
    try {
      await this.model.api.renameTarget(this.model.workspace, name, newName);
    } catch (error) {
      Notification.error(`Rename of '${name}' failed: ${messageOf(error)}`, {
        autoClose: 8000
      });
      return null;
    }
    await this.model.refresh();
    this.model.selected = newName;
    this._openDetails(newName);
    return newName;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    Signal.clearData(this);
  }

  private _onOperationFailed(_: ComputeModel, failure: IOperationFailure) {
    Notification.error(
      `${capitalise(failure.action)} of '${failure.target}' failed: ${failure.message}`,
      { autoClose: 10000 }
    );
  }

  private _settings: IComputeSettings = { ...DEFAULT_SETTINGS };
  private _settingsChanged = new Signal<this, IComputeSettings>(this);
  private _openDetails: (name: string) => void;
  private _openTab?: (url: string, label: string) => void;
  private _isDisposed = false;
}

export namespace ComputeController {
  export interface IOptions {
    model: ComputeModel;
    openDetails: (name: string) => void;
    /** Show a page of the Jupyter server's own origin in a main-area tab. */
    openTab?: (url: string, label: string) => void;
  }
}

function confirmationText(
  action: TargetAction,
  name: string,
  managed: boolean
): string {
  switch (action) {
    case 'delete':
      return managed
        ? `'${name}' will be stopped and removed. This cannot be undone.`
        : `'${name}' will be detached from this workspace. The compute itself is left as it is.`;
    case 'stop':
      return `'${name}' will be stopped. Variables held in its kernel are lost.`;
    case 'restart':
      return `'${name}' will be restarted. Variables held in its kernel are lost.`;
    default:
      return '';
  }
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
