/**
 * The Compute panel of the left sidebar: the workspace switcher, the create/attach/refresh
 * buttons, a filter, and the targets grouped by family.
 */
import {
  ReactWidget,
  addIcon,
  closeIcon,
  linkIcon,
  newFolderIcon,
  refreshIcon
} from '@jupyterlab/ui-components';
import * as React from 'react';

import type { ComputeController } from '../controller';
import type { ComputeModel } from '../model';
import { computeIcon } from '../icons';
import { InstanceCard } from './InstanceCard';
import { SignIn, offersSignIn } from './SignIn';
import { TargetList } from './TargetList';
import { useNow, useSignalVersion } from './common';

export const PANEL_ID = 'jupyter-compute-panel';

/** The sidebar widget. */
export class ComputePanel extends ReactWidget {
  constructor(options: { model: ComputeModel; controller: ComputeController }) {
    super();
    this.model = options.model;
    this.controller = options.controller;
    this.id = PANEL_ID;
    this.addClass('jp-ComputePanel');
    this.title.icon = computeIcon;
    this.title.caption = 'Compute';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Compute targets');
  }

  readonly model: ComputeModel;
  readonly controller: ComputeController;

  /** Focus the list, on the selected target if there is one, as soon as it is shown. */
  focusList(): void {
    this._focusRequest++;
    this.update();
  }

  protected render(): JSX.Element {
    return (
      <ComputeView
        model={this.model}
        controller={this.controller}
        focusRequest={this._focusRequest}
      />
    );
  }

  private _focusRequest = 0;
}

function ComputeView(props: {
  model: ComputeModel;
  controller: ComputeController;
  focusRequest: number;
}): JSX.Element {
  const { model, controller } = props;
  const version = useSignalVersion(model.changed);
  const hasCountdown = React.useMemo(
    () => Array.from(model.targets.values()).some(t => !!t.idle_shutdown_at),
    [model, version]
  );
  const now = useNow(hasCountdown, 5000);
  const canCreate = controller.canCreate('create');
  const canAttach = controller.canCreate('attach');
  const status = model.status;
  const error = model.error;
  const count = model.targets.size;
  const current = model.workspaces.find(w => w.id === model.workspace);
  const instance = model.thisInstance;

  return (
    <div className="jp-ComputePanel-body">
      <div className="jp-ComputePanel-header">
        <h2 className="jp-ComputePanel-title">Compute</h2>
        <div
          className="jp-ComputePanel-toolbar"
          role="toolbar"
          aria-label="Compute actions"
        >
          <button
            type="button"
            className="jp-ComputeToolbarButton"
            data-command="create"
            aria-label="Create compute target"
            title="Create a compute target (Alt+Shift+N)"
            disabled={!canCreate}
            onClick={() => void controller.create('create')}
          >
            <addIcon.react tag="span" elementSize="small" />
          </button>
          <button
            type="button"
            className="jp-ComputeToolbarButton"
            data-command="attach"
            aria-label="Attach compute"
            title={
              canAttach
                ? 'Attach existing compute (Alt+Shift+A)'
                : 'This workspace has nothing to attach'
            }
            disabled={!canAttach}
            onClick={() => void controller.create('attach')}
          >
            <linkIcon.react tag="span" elementSize="small" />
          </button>
          <button
            type="button"
            className="jp-ComputeToolbarButton"
            data-command="refresh"
            aria-label="Refresh compute targets"
            title="Refresh (Alt+Shift+R)"
            onClick={() => void model.refresh()}
          >
            <refreshIcon.react tag="span" elementSize="small" />
          </button>
        </div>
      </div>
      <div className="jp-ComputePanel-controls">
        <label className="jp-ComputePanel-label" htmlFor="jp-Compute-workspace">
          Workspace
        </label>
        <select
          id="jp-Compute-workspace"
          className="jp-mod-styled jp-ComputePanel-workspace"
          value={model.workspace}
          onChange={event => void model.setWorkspace(event.target.value)}
        >
          {model.workspaces.length === 0 ? (
            <option value={model.workspace}>{model.workspace}</option>
          ) : (
            model.workspaces.map(w => (
              <option key={w.id} value={w.id} title={w.description}>
                {w.id}
                {w.kind !== w.id ? ` (${w.kind})` : ''}
              </option>
            ))
          )}
        </select>
        <span className="jp-ComputePanel-workspaceActions">
          <button
            type="button"
            className="jp-ComputeToolbarButton"
            data-command="add-workspace"
            aria-label="Add an Azure ML workspace"
            title="Add an Azure ML workspace"
            onClick={() => void controller.addWorkspace()}
          >
            <newFolderIcon.react tag="span" elementSize="small" />
          </button>
          {current && current.kind !== 'local' ? (
            <button
              type="button"
              className="jp-ComputeToolbarButton"
              data-command="remove-workspace"
              aria-label={`Remove workspace ${current.id}`}
              title={`Remove workspace ${current.id} from this list`}
              onClick={() => void controller.removeWorkspace(current.id)}
            >
              <closeIcon.react tag="span" elementSize="small" />
            </button>
          ) : null}
        </span>
        <input
          type="search"
          className="jp-mod-styled jp-ComputePanel-filter"
          placeholder={`Filter ${count} target${count === 1 ? '' : 's'}`}
          aria-label="Filter targets by name"
          value={model.filter}
          onChange={event => {
            model.filter = event.target.value;
          }}
        />
      </div>
      {instance ? (
        <InstanceCard
          model={model}
          controller={controller}
          instance={instance}
          now={now}
        />
      ) : null}
      {status === 'offline' ? (
        <div className="jp-ComputePanel-banner jp-mod-offline" role="status">
          The server cannot be reached; reconnecting…
        </div>
      ) : error ? (
        <div className="jp-ComputePanel-banner jp-mod-error" role="alert">
          {offersSignIn(error) ? (
            // Azure's own explanation runs long: the headline says what to do, the rest is a click away.
            <>
              <strong>{model.workspace} is not signed in to Azure.</strong>
              <details className="jp-ComputePanel-why">
                <summary>Why</summary>
                {error.message}
              </details>
            </>
          ) : (
            error.message
          )}
          <button
            type="button"
            className="jp-ComputeLink"
            onClick={() => void model.refresh()}
          >
            Retry
          </button>
          {offersSignIn(error) ? (
            <SignIn
              key={model.workspace}
              model={model}
              workspace={model.workspace}
            />
          ) : null}
        </div>
      ) : null}
      {status === 'loading' && count === 0 ? (
        <div className="jp-ComputePanel-loading" role="status">
          Loading compute targets…
        </div>
      ) : (
        <TargetList
          model={model}
          controller={controller}
          version={version}
          now={now}
          focusRequest={props.focusRequest}
        />
      )}
    </div>
  );
}
