/**
 * The main-area tabs that show a target's details: one per target of a workspace, brought to
 * the front when it is open already.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';

import { TargetDetails } from './components/DetailsView';
import type { ComputeController } from './controller';
import { computeIcon } from './icons';
import type { ComputeModel } from './model';

export class DetailsTabs {
  constructor(options: DetailsTabs.IOptions) {
    this._shell = options.shell;
    this._model = options.model;
    this._controller = options.controller;
  }

  /** Show the details of a target of the workspace shown now. */
  open(name: string): void {
    const model = this._model;
    const key = `${model.workspace}/${name}`;
    let widget = this._open.get(key);
    if (!widget || widget.isDisposed) {
      const content = new TargetDetails({
        model,
        controller: this._controller,
        workspace: model.workspace,
        name
      });
      widget = new MainAreaWidget({ content });
      widget.id = `jupyter-compute-details-${encodeURIComponent(key)}`;
      widget.title.label = `Compute: ${name}`;
      widget.title.icon = computeIcon;
      widget.title.closable = true;
      this._open.set(key, widget);
      widget.disposed.connect(() => this._open.delete(key));
      this._shell.add(widget, 'main');
    }
    this._shell.activateById(widget.id);
  }

  private _shell: JupyterFrontEnd.IShell;
  private _model: ComputeModel;
  private _controller: ComputeController;
  private _open = new Map<string, MainAreaWidget<TargetDetails>>();
}

export namespace DetailsTabs {
  export interface IOptions {
    shell: JupyterFrontEnd.IShell;
    model: ComputeModel;
    controller: ComputeController;
  }
}
