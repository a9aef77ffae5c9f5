/**
 * The notebook toolbar's target picker: shows where the notebook's cells run (`local` by
 * default) and routes them elsewhere when another target is chosen.
 */
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { ReactWidget } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import * as React from 'react';

import type { ComputeController } from '../controller';
import type { ComputeModel } from '../model';
import { computeIcon } from '../icons';
import { NotebookRouter } from '../picker';
import { LOCAL } from '../route';
import { badgeTone } from '../state';
import { useSignalVersion } from './common';

/** Kinds whose targets are the machine the notebook already runs on. */
const SAME_AS_LOCAL = new Set(['local']);

export class TargetPickerWidget extends ReactWidget {
  constructor(router: NotebookRouter) {
    super();
    this.router = router;
    this.addClass('jp-ComputePicker');
  }

  readonly router: NotebookRouter;

  protected render(): JSX.Element {
    return <TargetPicker router={this.router} model={this.router.model} />;
  }
}

function TargetPicker(props: {
  router: NotebookRouter;
  model: ComputeModel;
}): JSX.Element {
  const { router, model } = props;
  useSignalVersion(model.changed);
  useSignalVersion(router.changed);
  const current = router.current;
  const targets = Array.from(model.targets.values())
    .filter(t => !SAME_AS_LOCAL.has(t.kind))
    .sort((a, b) => a.name.localeCompare(b.name));
  const currentTarget = model.targets.get(current);
  const busy = router.status !== 'idle';
  const tone =
    current === LOCAL
      ? 'running'
      : currentTarget
        ? badgeTone(currentTarget.state)
        : 'stopped';
  const label =
    router.status === 'starting'
      ? 'starting…'
      : router.status === 'routing'
        ? 'routing…'
        : '';
  return (
    <div
      className="jp-ComputePicker-body"
      title="Where this notebook's cells run"
    >
      <computeIcon.react tag="span" elementSize="small" />
      <span
        className={`jp-ComputePicker-dot jp-mod-${tone}`}
        aria-hidden="true"
      />
      <select
        className="jp-ComputePicker-select"
        aria-label="Compute target for this notebook"
        value={current}
        disabled={busy}
        onChange={event => void router.choose(event.target.value)}
      >
        <option value={LOCAL}>local</option>
        {!currentTarget && current !== LOCAL ? (
          <option value={current}>{current}</option>
        ) : null}
        {targets.map(t => (
          <option key={t.name} value={t.name}>
            {t.name}
            {t.state === 'running' ? '' : ` (${t.state})`}
          </option>
        ))}
      </select>
      {label ? (
        <span className="jp-ComputePicker-status" role="status">
          {label}
        </span>
      ) : null}
    </div>
  );
}

/** Adds the picker to every notebook's toolbar, next to the kernel name. */
export class TargetPickerExtension
  implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel>
{
  constructor(
    private readonly _model: ComputeModel,
    private readonly _controller: ComputeController
  ) {}

  createNew(panel: NotebookPanel): IDisposable {
    const router = new NotebookRouter({
      panel,
      model: this._model,
      controller: this._controller
    });
    const widget = new TargetPickerWidget(router);
    if (!panel.toolbar.insertBefore('kernelName', 'computeTarget', widget)) {
      panel.toolbar.addItem('computeTarget', widget);
    }
    return new DisposableDelegate(() => {
      widget.dispose();
      router.dispose();
    });
  }
}
