/**
 * The notebook toolbar's target picker: shows where the notebook's next cell runs (`local` by
 * default, or the target of the notebook's kernel) and takes it elsewhere when another target is
 * chosen.
 */
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import type { KernelSpec } from '@jupyterlab/services';
import { ReactWidget } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import * as React from 'react';

import { activityText, optionNote } from '../choice';
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
  const startingTarget = router.startingTarget;
  // A kernel on its way is not changed again until it is there.
  const busy = router.status !== 'idle' || startingTarget !== null;
  const tone =
    current === LOCAL
      ? 'running'
      : currentTarget
        ? badgeTone(currentTarget.state)
        : 'stopped';
  const label = activityText({
    activity: router.status,
    startingTarget
  });
  const noteOf = (name: string, kind: string | null) =>
    optionNote(kind, router.hasKernel(name));
  const title =
    current === LOCAL
      ? "Where this notebook's cells run: here, in the notebook's own kernel"
      : `Where this notebook's cells run: on '${current}', ${noteOf(
          current,
          currentTarget?.kind ?? null
        )}`;
  return (
    <div className="jp-ComputePicker-body" title={title}>
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
        <option value={LOCAL} title="the notebook's own kernel, here">
          local
        </option>
        {!currentTarget && current !== LOCAL ? (
          <option value={current} title={noteOf(current, null)}>
            {current}
          </option>
        ) : null}
        {targets.map(t => (
          <option
            key={t.name}
            value={t.name}
            title={noteOf(t.name, t.kind)}
            data-kind={t.kind}
          >
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
    private readonly _controller: ComputeController,
    private readonly _specs: KernelSpec.IManager
  ) {}

  createNew(panel: NotebookPanel): IDisposable {
    const router = new NotebookRouter({
      panel,
      model: this._model,
      controller: this._controller,
      specs: this._specs
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
