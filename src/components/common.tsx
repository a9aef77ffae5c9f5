/**
 * Small pieces the sidebar and the details view share: the state badge, the action buttons,
 * and a hook that re-renders on model changes at most once a frame.
 */
import {
  LabIcon,
  closeIcon,
  deleteIcon,
  refreshIcon,
  runIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

import type { IKind, ITarget, TargetState } from '../api';
import type { ComputeController } from '../controller';
import {
  TargetAction,
  actionLabel,
  badgeTone,
  canRun,
  supportsAction
} from '../state';

/** Re-render when `signal` fires, batching bursts of events into one render a frame. */
export function useSignalVersion(signal: ISignal<unknown, unknown>): number {
  const [version, setVersion] = React.useState(0);
  React.useEffect(() => {
    let frame: number | null = null;
    const onChange = () => {
      if (frame === null) {
        frame = requestAnimationFrame(() => {
          frame = null;
          setVersion(v => v + 1);
        });
      }
    };
    signal.connect(onChange);
    return () => {
      signal.disconnect(onChange);
      if (frame !== null) {
        cancelAnimationFrame(frame);
      }
    };
  }, [signal]);
  return version;
}

/** A clock that ticks every `intervalMs` while `active`, for countdowns. */
export function useNow(active: boolean, intervalMs: number): number {
  const [now, setNow] = React.useState(() => Date.now());
  React.useEffect(() => {
    if (!active) {
      return;
    }
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [active, intervalMs]);
  return now;
}

export function StateBadge(props: { state: TargetState }): JSX.Element {
  const tone = badgeTone(props.state);
  return (
    <span
      className={`jp-ComputeBadge jp-mod-${tone}`}
      data-state={props.state}
      title={`State: ${props.state}`}
    >
      {props.state}
    </span>
  );
}

const ICONS: Record<TargetAction, LabIcon> = {
  start: runIcon,
  stop: stopIcon,
  restart: refreshIcon,
  delete: deleteIcon
};

export const ROW_ACTIONS: readonly TargetAction[] = [
  'start',
  'stop',
  'restart',
  'delete'
];

/** The start/stop/restart/delete buttons a kind offers, enabled as the state allows. */
export function ActionButtons(props: {
  target: ITarget;
  kind: IKind | undefined;
  controller: ComputeController;
  busy: boolean;
  withLabels?: boolean;
  tabIndex?: number;
}): JSX.Element {
  const { target, kind, controller } = props;
  return (
    <>
      {ROW_ACTIONS.filter(a => supportsAction(target, kind, a)).map(action => {
        const label = actionLabel(target, action);
        const enabled = !props.busy && canRun(target, kind, action);
        const icon =
          action === 'delete' && !target.managed ? closeIcon : ICONS[action];
        return (
          <button
            key={action}
            type="button"
            className={`jp-ComputeAction jp-mod-${action}${
              props.withLabels ? ' jp-mod-labelled' : ''
            }`}
            data-action={action}
            aria-label={`${label} ${target.name}`}
            title={
              enabled ? label : `${label} (not possible while ${target.state})`
            }
            disabled={!enabled}
            tabIndex={props.tabIndex}
            onClick={event => {
              event.stopPropagation();
              void controller.run(target.name, action);
            }}
          >
            <icon.react tag="span" elementSize="small" />
            {props.withLabels ? (
              <span className="jp-ComputeAction-label">{label}</span>
            ) : null}
          </button>
        );
      })}
    </>
  );
}
