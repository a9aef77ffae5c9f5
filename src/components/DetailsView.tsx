/**
 * A target's details, in a main-area tab: every non-secret property, node counts and nodes,
 * errors in full, and links to the applications the backend reports.
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { JOB_ENDED } from '../api';
import type { IJob, INode, ITarget } from '../api';
import type { ComputeController } from '../controller';
import type { ComputeModel } from '../model';
import { messageOf } from '../request';
import {
  formatAgo,
  formatElapsed,
  formatNodes,
  formatSize,
  formatWhen
} from '../state';
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
          ? {
              label: 'Dashboard',
              url: URLExt.join(baseUrl, path),
              sameServer: true
            }
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
  const now = useNow(true, target?.idle_shutdown_at ? 5000 : 30000);
  const [nodes, setNodes] = React.useState<INode[] | null>(null);
  const [nodesError, setNodesError] = React.useState('');
  // One kernel is one node: a table of it would only repeat the summary.
  const canListNodes =
    !!kind?.operations.includes('nodes') &&
    target?.state !== 'deleting' &&
    target?.nodes?.max !== 1;

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

  const rawSchedules = target?.properties?.schedules;
  const schedules: ISchedule[] = Array.isArray(rawSchedules)
    ? rawSchedules
    : [];
  const properties = Object.entries(target?.properties ?? {}).filter(
    ([k]) => !(k === 'schedules' && schedules.length > 0)
  );

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
          {renamable(target) ? (
            <button
              type="button"
              className="jp-mod-styled jp-ComputeDetails-rename"
              data-action="rename"
              aria-label={`Rename ${target.name}`}
              title="Rename: a stopped target; its kernel follows"
              disabled={model.isBusy(name) || !!operation}
              onClick={() => void controller.rename(target.name)}
            >
              Rename…
            </button>
          ) : null}
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
                value={<When iso={target.idle_shutdown_at} now={now} />}
              />
            ) : null}
            <Row
              label="Created"
              value={<When iso={target.created} now={now} />}
            />
            <Row
              label="Modified"
              value={<When iso={target.modified} now={now} />}
            />
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

      {schedules.length > 0 ? (
        <section aria-labelledby="jp-ComputeDetails-schedules">
          <h2 id="jp-ComputeDetails-schedules">Schedules</h2>
          <ScheduleTable schedules={schedules} />
        </section>
      ) : null}

      {JOB_KINDS.has(target.kind) ? (
        <JobsSection model={model} workspace={props.workspace} target={name} />
      ) : null}

      <section aria-labelledby="jp-ComputeDetails-props">
        <h2 id="jp-ComputeDetails-props">Properties</h2>
        {properties.length === 0 ? (
          <p>None.</p>
        ) : (
          <table className="jp-ComputeTable">
            <tbody>
              {properties.map(([k, v]) => (
                <Row
                  key={k}
                  label={k}
                  value={
                    isFlatMap(v) ? <KeyValueTable map={v} /> : formatValue(v)
                  }
                />
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}

/**
 * Whether the details offer Rename: a stopped (or failed) target of this machine's workspace.
 * A cloud workspace names its compute itself, and this machine is not a target one can rename.
 */
function renamable(target: ITarget): boolean {
  return (
    target.workspace === 'local' &&
    target.kind !== 'local' &&
    (target.state === 'stopped' || target.state === 'failed')
  );
}

/** Kinds whose cells run as Azure ML jobs: their details list recent jobs. */
const JOB_KINDS = new Set(['compute-cluster', 'kubernetes']);

/** A compute instance's start or stop schedule, as the server reads it from Azure. */
interface ISchedule {
  action?: string;
  when?: string;
  cron?: string;
  time_zone?: string;
  enabled?: boolean;
}

export function ScheduleTable(props: { schedules: ISchedule[] }): JSX.Element {
  return (
    <table className="jp-ComputeTable jp-mod-schedules">
      <thead>
        <tr>
          <th scope="col">action</th>
          <th scope="col">when</th>
          <th scope="col">time zone</th>
          <th scope="col">enabled</th>
        </tr>
      </thead>
      <tbody>
        {props.schedules.map((s, i) => (
          <tr key={i}>
            <td>{s.action ?? '—'}</td>
            <td>{s.when ?? (s.cron ? `cron ${s.cron}` : '—')}</td>
            <td>{s.time_zone ?? 'UTC'}</td>
            <td>{s.enabled === false ? 'no' : 'yes'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** The target's recent jobs, newest first, each running one with a Cancel action. */
export function JobsSection(props: {
  model: ComputeModel;
  workspace: string;
  target: string;
}): JSX.Element {
  const { model, workspace, target } = props;
  const [jobs, setJobs] = React.useState<IJob[] | null>(null);
  const [error, setError] = React.useState('');
  const [note, setNote] = React.useState('');
  const [cancelling, setCancelling] = React.useState<string | null>(null);

  const load = React.useCallback(() => {
    model.api.listJobs(workspace, target).then(
      list => {
        setJobs(list);
        setError('');
      },
      e => setError(messageOf(e))
    );
  }, [model, workspace, target]);
  React.useEffect(load, [load]);

  const cancel = async (job: string) => {
    setCancelling(job);
    try {
      const after = await model.api.cancelJob(workspace, job);
      setJobs(list => (list ?? []).map(j => (j.name === job ? after : j)));
      setNote(`${job}: ${after.note ?? after.status}`);
      setError('');
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setCancelling(null);
    }
  };

  return (
    <section aria-labelledby="jp-ComputeDetails-jobs">
      <h2 id="jp-ComputeDetails-jobs">
        Jobs{' '}
        <button type="button" className="jp-ComputeLink" onClick={load}>
          Refresh
        </button>
      </h2>
      {error ? (
        <p className="jp-ComputeDetails-error" role="alert">
          {error}
        </p>
      ) : null}
      {note ? <p role="status">{note}</p> : null}
      {jobs === null ? (
        error ? null : (
          <p role="status">Loading…</p>
        )
      ) : jobs.length === 0 ? (
        <p>No jobs.</p>
      ) : (
        <table className="jp-ComputeTable jp-mod-jobs">
          <thead>
            <tr>
              <th scope="col">job</th>
              <th scope="col">status</th>
              <th scope="col">created</th>
              <th scope="col">duration</th>
              <th scope="col">
                <span className="jp-ComputeVisuallyHidden">actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {jobs.map(j => (
              <tr key={j.name} data-job={j.name}>
                <td>
                  {j.studio_url ? (
                    <a
                      href={j.studio_url}
                      target="_blank"
                      rel="noopener noreferrer"
                    >
                      {j.display_name || j.name}
                    </a>
                  ) : (
                    j.display_name || j.name
                  )}
                </td>
                <td>{j.status}</td>
                <td>{formatAgo(j.age_seconds)}</td>
                <td>{formatElapsed(j.duration_seconds)}</td>
                <td>
                  {JOB_ENDED.has(j.status) ? null : (
                    <button
                      type="button"
                      className="jp-mod-styled jp-mod-warn"
                      disabled={cancelling !== null}
                      aria-label={`Cancel job ${j.name}`}
                      onClick={() => void cancel(j.name)}
                    >
                      {cancelling === j.name ? 'Cancelling…' : 'Cancel'}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Row(props: { label: string; value: React.ReactNode }): JSX.Element {
  return (
    <tr>
      <th scope="row">{props.label}</th>
      <td>
        <span className="jp-ComputeTable-value">{props.value}</span>
      </td>
    </tr>
  );
}

/** A moment as the details view shows every one: relative, with the exact time on hover. */
export function When(props: {
  iso: string | null | undefined;
  now: number;
}): JSX.Element {
  return (
    <time dateTime={props.iso ?? undefined} title={formatTime(props.iso)}>
      {formatWhen(props.iso, props.now)}
    </time>
  );
}

/** Whether a property is a flat map (environment variables, tags): shown as a table, not JSON. */
function isFlatMap(
  v: unknown
): v is Record<string, string | number | boolean | null> {
  return (
    !!v &&
    typeof v === 'object' &&
    !Array.isArray(v) &&
    Object.keys(v).length > 0 &&
    Object.values(v).every(
      x => x === null || ['string', 'number', 'boolean'].includes(typeof x)
    )
  );
}

export function KeyValueTable(props: {
  map: Record<string, string | number | boolean | null>;
}): JSX.Element {
  return (
    <table className="jp-ComputeTable jp-mod-map">
      <tbody>
        {Object.entries(props.map).map(([k, v]) => (
          <tr key={k}>
            <th scope="row">{k}</th>
            <td>{v === null ? '—' : String(v)}</td>
          </tr>
        ))}
      </tbody>
    </table>
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
