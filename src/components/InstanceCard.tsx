/**
 * "This instance", pinned at the top of the sidebar when JupyterLab runs on an Azure ML compute
 * instance: its size and state, the idle-shutdown countdown, what Azure ML counts as activity
 * and what there is of it now, and its own start/stop/restart/delete.
 */
import * as React from 'react';

import type { IWorkspaceListing, ITarget } from '../api';
import type { ComputeController } from '../controller';
import type { ComputeModel } from '../model';
import { formatDuration, formatSize } from '../state';
import { ApplicationLinks } from './ApplicationLinks';
import { ActionButtons, StateBadge } from './common';

type ThisInstance = NonNullable<IWorkspaceListing['this_instance']>;

/** One thing Azure ML counts as activity (`properties.idle_shutdown.counts_as_activity`). */
export interface IActivityKind {
  key: string;
  label: string;
  description: string;
}

/** What the server reports of the instance's activity, as the Jupyter server on it sees it. */
export interface IActivity {
  kernels: { count: number; busy: number };
  terminals: { count: number };
  jobs: { running: boolean };
  connections: {
    notebooks: number;
    ssh: number | null;
    vscode: number | null;
  };
  last_activity: string | null;
}

/** `properties.idle_shutdown` of the instance this runs on. */
export interface IIdleShutdown {
  minutes: number | null;
  /** When it stops if nothing happens before; null unless `state` is `counting`. */
  at: string | null;
  idle_since: string | null;
  /** off: none set; counting; active: something counts as activity; unknown: cannot be seen. */
  state: 'off' | 'counting' | 'active' | 'unknown';
  /** What keeps it from counting down now, in words. */
  active: string[];
  counts_as_activity: IActivityKind[];
  activity: IActivity | null;
}

export function idleShutdownOf(target: ITarget): IIdleShutdown | null {
  const value = target.properties?.idle_shutdown;
  return value && typeof value === 'object' ? (value as IIdleShutdown) : null;
}

/** The countdown in words: "Stops when idle in 59 min", or why it does not count down. */
export function describeIdleShutdown(
  idle: IIdleShutdown | null,
  now: number
): string {
  if (!idle || !idle.minutes) {
    return 'No idle shutdown is set';
  }
  const after = formatDuration(idle.minutes * 60);
  switch (idle.state) {
    case 'counting': {
      const at = idle.at ? Date.parse(idle.at) : NaN;
      if (Number.isNaN(at)) {
        break;
      }
      const seconds = Math.round((at - now) / 1000);
      return seconds > 0
        ? `Idle shutdown in ${formatDuration(seconds)} (at ${new Date(
            at
          ).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })})`
        : 'Idle shutdown is due';
    }
    case 'active':
      return `Not idle: ${idle.active.join(', ')}. Idle shutdown after ${after} without activity`;
  }
  return `Idle shutdown after ${after} without activity`;
}

/** What there is now of one kind of activity, in words; '' when the server cannot see it. */
export function describeActivity(
  key: string,
  activity: IActivity | null
): string {
  if (!activity) {
    return '';
  }
  switch (key) {
    case 'kernels': {
      const { count, busy } = activity.kernels;
      return `${count} open${count ? `, ${busy} running code` : ''}`;
    }
    case 'terminals':
      return `${activity.terminals.count} open`;
    case 'jobs':
      return activity.jobs.running ? 'a job is running' : 'none running';
    case 'connections': {
      const c = activity.connections;
      const seen = (n: number | null, what: string) =>
        n === null ? `${what} not visible` : `${n} ${what}`;
      return [
        seen(c.ssh, 'SSH'),
        seen(c.vscode, 'VS Code'),
        `${c.notebooks} notebook`
      ].join(', ');
    }
  }
  return '';
}

/** Whether the activity of this kind keeps the instance from counting as idle now. */
function isActive(key: string, activity: IActivity | null): boolean {
  if (!activity) {
    return false;
  }
  switch (key) {
    case 'kernels':
      return activity.kernels.busy > 0;
    case 'jobs':
      return activity.jobs.running;
    case 'connections':
      return !!activity.connections.ssh || !!activity.connections.vscode;
  }
  return false;
}

/** The instance's target, when the workspace shown is the instance's. */
function findTarget(
  model: ComputeModel,
  instance: ThisInstance
): ITarget | undefined {
  if (model.workspace !== instance.workspace) {
    return undefined;
  }
  const name = instance.name.toLowerCase();
  for (const target of model.targets.values()) {
    if (target.name.toLowerCase() === name) {
      return target;
    }
  }
  return undefined;
}

export function InstanceCard(props: {
  model: ComputeModel;
  controller: ComputeController;
  instance: ThisInstance;
  now: number;
}): JSX.Element {
  const { model, controller, instance } = props;
  const target = findTarget(model, instance);
  const idle = target ? idleShutdownOf(target) : null;
  const size = target?.size;
  const specs = target ? formatSize(target) : '';
  return (
    <section
      className="jp-ComputeInstance"
      aria-label={`This compute instance: ${instance.name}`}
      data-name={instance.name}
    >
      <div className="jp-ComputeInstance-header">
        <span className="jp-ComputeInstance-label">This instance</span>
        {target ? <StateBadge state={target.state} /> : null}
      </div>
      <div className="jp-ComputeInstance-name" title={instance.name}>
        {instance.name}
      </div>
      {target ? (
        <>
          <div className="jp-ComputeInstance-size">
            {size?.name && specs !== size.name
              ? `${size.name} · ${specs}`
              : specs}
          </div>
          <div
            className="jp-ComputeInstance-idle"
            data-idle-state={idle?.state ?? 'off'}
            role="timer"
            aria-live="off"
          >
            {describeIdleShutdown(idle, props.now)}
          </div>
          {idle && idle.counts_as_activity.length ? (
            <div className="jp-ComputeInstance-activity">
              <div className="jp-ComputeInstance-activityTitle">
                Counts as activity
              </div>
              <ul>
                {idle.counts_as_activity.map(kind => {
                  const now = describeActivity(kind.key, idle.activity);
                  return (
                    <li
                      key={kind.key}
                      data-activity={kind.key}
                      className={
                        isActive(kind.key, idle.activity)
                          ? 'jp-mod-active'
                          : undefined
                      }
                      title={kind.description}
                    >
                      <span className="jp-ComputeInstance-activityLabel">
                        {kind.label}
                      </span>
                      {now ? (
                        <span className="jp-ComputeInstance-activityNow">
                          {now}
                        </span>
                      ) : null}
                    </li>
                  );
                })}
              </ul>
            </div>
          ) : null}
          <div className="jp-ComputeInstance-actions">
            <ApplicationLinks target={target} />
            <span className="jp-ComputeInstance-buttons">
              <ActionButtons
                target={target}
                kind={model.kindOf(target)}
                controller={controller}
                busy={
                  model.isBusy(target.name) || !!model.operation(target.name)
                }
              />
            </span>
          </div>
        </>
      ) : model.workspace === instance.workspace ? null : instance.workspace ? (
        <div className="jp-ComputeInstance-note">
          In workspace {instance.workspace}.{' '}
          <button
            type="button"
            className="jp-ComputeLink"
            onClick={() => void model.setWorkspace(instance.workspace!)}
          >
            Show it
          </button>
        </div>
      ) : (
        <div className="jp-ComputeInstance-note">
          Its workspace is not fully named on this instance.{' '}
          <button
            type="button"
            className="jp-ComputeLink"
            onClick={() => void controller.addWorkspace()}
          >
            Add it
          </button>
        </div>
      )}
    </section>
  );
}
