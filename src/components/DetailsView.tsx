/**
 * A target's details, in a main-area tab: every non-secret property, node counts and nodes,
 * errors in full, and links to the applications the backend reports.
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { INode, ITarget } from '../api';
import type { ComputeController } from '../controller';
import type { ComputeModel } from '../model';
import { messageOf } from '../request';
import { formatIdleShutdown, formatNodes, formatSize } from '../state';
import { ActionButtons, StateBadge, useNow, useSignalVersion } from './common';
import { ScaleControl, scaleFields } from './ScaleControl';

const NODE_COUNTS: (keyof NonNullable<ITarget['nodes']>)[] = [
  'current',
  'min',
  'max',
  'idle',
  'running',
  'preparing',
  'unusable',
  'leaving',
  'preempted'
];

export class TargetDetails extends ReactWidget {
  constructor(options: {
    model: ComputeModel;
    controller: ComputeController;
    workspace: string;
    name: string;
  }) {
    super();
    this.model = options.model;
    this.controller = options.controller;
    this.workspace = options.workspace;
    this.targetName = options.name;
    this.addClass('jp-ComputeDetails');
  }

  readonly model: ComputeModel;
  readonly controller: ComputeController;
  readonly workspace: string;
  readonly targetName: string;

  protected render(): JSX.Element {
    return (
      <DetailsView
        model={this.model}
        controller={this.controller}
        workspace={this.workspace}
        name={this.targetName}
      />
    );
  }
}

/**
 * Links to a target's applications: `properties.applications`, `*_url` properties, and a
 * cluster's dashboard. A dashboard on the server's machine (`dashboard_path`) opens through the
 * Jupyter server, under its authentication, so it works wherever the browser is (JupyterHub, a
 * remote workstation); one elsewhere opens at its own `dashboard_link`.
 */
export function applicationLinks(
  target: ITarget,
  baseUrl: string = PageConfig.getBaseUrl()
): { label: string; url: string; sameServer?: boolean }[] {
  const links: { label: string; url: string; sameServer?: boolean }[] = [];
  const apps = target.properties?.applications;
  if (Array.isArray(apps)) {
    for (const app of apps) {
      if (!app || typeof app !== 'object') {
        continue;
      }
      const a = app as Record<string, unknown>;
      const url = a.url ?? a.endpoint_uri ?? a.endpointUri;
      const label = a.name ?? a.display_name ?? a.displayName ?? url;
      if (typeof url === 'string' && /^https?:\/\//.test(url)) {
        links.push({ label: String(label), url });
      }
    }
  }
  for (const [key, value] of Object.entries(target.properties ?? {})) {
    if (typeof value !== 'string' || !/^https?:\/\//.test(value)) {
      continue;
    }
    if (key.endsWith('_url')) {
      links.push({ label: key.slice(0, -4).replace(/_/g, ' '), url: value });
    } else if (key === 'dashboard_link') {
      const path = target.properties?.dashboard_path;
      const proxied = typeof path === 'string' && /^proxy\/\d+\//.test(path);
      links.push(
        proxied
          ? { label: 'Dashboard', url: URLExt.join(baseUrl, path), sameServer: true }
          : { label: 'Dashboard', url: value }
      );
    }
  }
  return links;
}

function formatValue(value: unknown): string {
  if (value === null || value === undefined) {
    return '—';
  }
  if (typeof value === 'object') {
    return JSON.stringify(value, null, 1);
  }
  return String(value);
}

function formatTime(iso: string | null | undefined): string {
  if (!iso) {
    return '—';
  }
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
}

function DetailsView(props: {
  model: ComputeModel;
  controller: ComputeController;
  workspace: string;
  name: string;
}): JSX.Element {
  const { model, controller, name } = props;
  useSignalVersion(model.changed);
  const sameWorkspace = model.workspace === props.workspace;
  const target = sameWorkspace ? model.targets.get(name) : undefined;
  const kind = target ? model.kindOf(target) : undefined;
  const now = useNow(!!target?.idle_shutdown_at, 5000);
  const [nodes, setNodes] = React.useState<INode[] | null>(null);
  const [nodesError, setNodesError] = React.useState('');
  const canListNodes =
    !!kind?.operations.includes('nodes') && target?.state !== 'deleting';

  const loadNodes = React.useCallback(() => {
    if (!canListNodes) {
      return;
    }
    model.api.listNodes(props.workspace, name).then(
      list => {
        setNodes(list);
        setNodesError('');
      },
      error => setNodesError(messageOf(error))
    );
  }, [model, props.workspace, name, canListNodes]);

  // Nodes are fetched again when the target changes state, never on a timer.
  React.useEffect(loadNodes, [loadNodes, target?.state]);

  React.useEffect(() => {
    if (sameWorkspace && !target) {
      void model.refreshTarget(name);
    }
    // Only when the tab opens: from then on, events keep the target current.
  }, [sameWorkspace]);

  if (!sameWorkspace) {
    return (
      <div className="jp-ComputeDetails-body">
        <p>
          '{name}' is in workspace '{props.workspace}'. Switch the Compute panel
          to that workspace to see it.
        </p>
      </div>
    );
  }
  if (!target) {
    return (
      <div className="jp-ComputeDetails-body">
        <p role="status">There is no target named '{name}' (any more).</p>
      </div>
    );
  }
  const links = applicationLinks(target);
  const counts = NODE_COUNTS.filter(
    k =>
      target.nodes && target.nodes[k] !== null && target.nodes[k] !== undefined
  );
  const operation = model.operation(name);

  return (
    <div className="jp-ComputeDetails-body">
      <header className="jp-ComputeDetails-header">
        <h1 className="jp-ComputeDetails-title">{target.name}</h1>
        <StateBadge state={target.state} />
        <span className="jp-ComputeDetails-actions">
          <ActionButtons
            target={target}
            kind={kind}
            controller={controller}
            busy={model.isBusy(name) || !!operation}
            withLabels
          />
        </span>
      </header>
      {operation ? (
        <p className="jp-ComputeDetails-progress" role="status">
          {operation.action}: {operation.progress || 'in progress'}
        </p>
      ) : null}

      <section aria-labelledby="jp-ComputeDetails-summary">
        <h2 id="jp-ComputeDetails-summary">Summary</h2>
        <table className="jp-ComputeTable">
          <tbody>
            <Row
              label="Kind"
              value={`${target.kind}${kind ? ` (${kind.family})` : ''}`}
            />
            <Row label="Workspace" value={target.workspace} />
            <Row
              label="Managed here"
              value={target.managed ? 'yes (created here)' : 'no (attached)'}
            />
            <Row label="State" value={target.state} />
            {target.provider_state ? (
              <Row label="Provider state" value={target.provider_state} />
            ) : null}
            {formatSize(target) ? (
              <Row
                label="Size"
                value={`${target.size?.name ?? ''} ${formatSize(target)}`.trim()}
              />
            ) : null}
            {formatNodes(target) ? (
              <Row label="Nodes" value={formatNodes(target)} />
            ) : null}
            {target.idle_shutdown_at ? (
              <Row
                label="Idle shutdown"
                value={`${formatTime(target.idle_shutdown_at)} (${formatIdleShutdown(target, now)})`}
              />
            ) : null}
            <Row label="Created" value={formatTime(target.created)} />
            <Row label="Modified" value={formatTime(target.modified)} />
          </tbody>
        </table>
      </section>

      {scaleFields(kind).length && target.state !== 'deleting' ? (
        <section aria-labelledby="jp-ComputeDetails-scale">
          <h2 id="jp-ComputeDetails-scale">Scale</h2>
          <ScaleControl model={model} target={target} kind={kind} />
        </section>
      ) : null}

      {links.length ? (
        <section aria-labelledby="jp-ComputeDetails-apps">
          <h2 id="jp-ComputeDetails-apps">Applications</h2>
          <ul className="jp-ComputeDetails-links">
            {links.map(link => (
              <li key={link.url}>
                <a href={link.url} target="_blank" rel="noopener noreferrer">
                  {link.label}
                </a>
              </li>
            ))}
          </ul>
        </section>
      ) : null}

      <section aria-labelledby="jp-ComputeDetails-errors">
        <h2 id="jp-ComputeDetails-errors">Errors</h2>
        {target.errors.length === 0 ? (
          <p>None.</p>
        ) : (
          <ul className="jp-ComputeDetails-errorList">
            {target.errors.map((e, i) => (
              <li key={i}>
                <pre className="jp-ComputeDetails-error">{e.message}</pre>
                <span className="jp-ComputeDetails-errorMeta">
                  {[e.code, e.at ? formatTime(e.at) : '']
                    .filter(Boolean)
                    .join(' · ')}
                </span>
              </li>
            ))}
          </ul>
        )}
      </section>

      {counts.length ? (
        <section aria-labelledby="jp-ComputeDetails-counts">
          <h2 id="jp-ComputeDetails-counts">Node counts</h2>
          <table className="jp-ComputeTable jp-mod-counts">
            <thead>
              <tr>
                {counts.map(k => (
                  <th key={k} scope="col">
                    {k}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              <tr>
                {counts.map(k => (
                  <td key={k}>{String(target.nodes?.[k])}</td>
                ))}
              </tr>
            </tbody>
          </table>
        </section>
      ) : null}

      {canListNodes ? (
        <section aria-labelledby="jp-ComputeDetails-nodes">
          <h2 id="jp-ComputeDetails-nodes">
            Nodes{' '}
            <button
              type="button"
              className="jp-ComputeLink"
              onClick={loadNodes}
            >
              Refresh
            </button>
          </h2>
          {nodesError ? (
            <p className="jp-ComputeDetails-error" role="alert">
              {nodesError}
            </p>
          ) : nodes === null ? (
            <p role="status">Loading…</p>
          ) : nodes.length === 0 ? (
            <p>No nodes.</p>
          ) : (
            <NodeTable nodes={nodes} />
          )}
        </section>
      ) : null}

      <section aria-labelledby="jp-ComputeDetails-props">
        <h2 id="jp-ComputeDetails-props">Properties</h2>
        {Object.keys(target.properties ?? {}).length === 0 ? (
          <p>None.</p>
        ) : (
          <table className="jp-ComputeTable">
            <tbody>
              {Object.entries(target.properties).map(([k, v]) => (
                <Row key={k} label={k} value={formatValue(v)} />
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}

function Row(props: { label: string; value: string }): JSX.Element {
  return (
    <tr>
      <th scope="row">{props.label}</th>
      <td>
        <span className="jp-ComputeTable-value">{props.value}</span>
      </td>
    </tr>
  );
}

function NodeTable(props: { nodes: INode[] }): JSX.Element {
  const propertyKeys = Array.from(
    new Set(props.nodes.flatMap(n => Object.keys(n.properties ?? {})))
  );
  return (
    <table className="jp-ComputeTable jp-mod-nodes">
      <thead>
        <tr>
          <th scope="col">id</th>
          <th scope="col">state</th>
          <th scope="col">address</th>
          {propertyKeys.map(k => (
            <th key={k} scope="col">
              {k}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {props.nodes.map(n => (
          <tr key={n.id}>
            <td>{n.id}</td>
            <td>{n.state}</td>
            <td>
              {n.address ?? '—'}
              {n.port ? `:${n.port}` : ''}
            </td>
            {propertyKeys.map(k => (
              <td key={k}>{formatValue(n.properties?.[k])}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
