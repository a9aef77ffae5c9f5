/**
 * What a target's state means for the sidebar: its badge colour, which actions it allows,
 * and how its size, nodes and idle shutdown read.
 */
import type { IKind, ITarget, TargetState } from './api';

/** States during which an operation is running on the target. */
export const TRANSITIONAL_STATES: ReadonlySet<TargetState> = new Set([
  'creating',
  'starting',
  'stopping',
  'restarting',
  'deleting'
]);

export function isTransitional(state: TargetState): boolean {
  return TRANSITIONAL_STATES.has(state);
}

/** The badge tone, after Azure ML Studio: green running, red failed, grey stopped, blue in between. */
export type BadgeTone = 'running' | 'failed' | 'stopped' | 'transitional';

export function badgeTone(state: TargetState): BadgeTone {
  if (state === 'running') {
    return 'running';
  }
  if (state === 'failed') {
    return 'failed';
  }
  if (isTransitional(state)) {
    return 'transitional';
  }
  return 'stopped';
}

/** The actions a row offers. `delete` is shown as "Detach" for targets that were attached. */
export type TargetAction = 'start' | 'stop' | 'restart' | 'delete';

const ALLOWED_IN: Record<TargetAction, ReadonlySet<TargetState>> = {
  start: new Set(['stopped', 'failed', 'unknown']),
  stop: new Set(['running', 'failed', 'unknown']),
  restart: new Set(['running', 'failed']),
  delete: new Set(['running', 'stopped', 'failed', 'unknown'])
};

/** The operation name the kind must list for an action to exist at all. */
export function operationFor(target: ITarget, action: TargetAction): string {
  if (action === 'delete') {
    return target.managed ? 'delete' : 'detach';
  }
  return action;
}

/** Whether the kind offers the action at all (independent of the current state). */
export function supportsAction(
  target: ITarget,
  kind: IKind | undefined,
  action: TargetAction
): boolean {
  if (!kind) {
    return false;
  }
  return kind.operations.includes(operationFor(target, action));
}

/** Whether the action can be taken now: the kind offers it and the state allows it. */
export function canRun(
  target: ITarget,
  kind: IKind | undefined,
  action: TargetAction
): boolean {
  return (
    supportsAction(target, kind, action) && ALLOWED_IN[action].has(target.state)
  );
}

export function actionLabel(target: ITarget, action: TargetAction): string {
  switch (action) {
    case 'start':
      return 'Start';
    case 'stop':
      return 'Stop';
    case 'restart':
      return 'Restart';
    case 'delete':
      return target.managed ? 'Delete' : 'Detach';
  }
}

/** "4 vCPUs · 16 GB · 1 GPU", leaving out what the backend does not know. */
export function formatSize(target: ITarget): string {
  const size = target.size;
  if (!size) {
    return '';
  }
  const parts: string[] = [];
  if (size.vcpus !== null && size.vcpus !== undefined) {
    parts.push(`${size.vcpus} vCPU${size.vcpus === 1 ? '' : 's'}`);
  }
  if (size.memory_gb !== null && size.memory_gb !== undefined) {
    parts.push(`${formatNumber(size.memory_gb)} GB`);
  }
  if (size.gpus) {
    parts.push(`${size.gpus} GPU${size.gpus === 1 ? '' : 's'}`);
  }
  if (parts.length === 0 && size.name) {
    parts.push(size.name);
  }
  return parts.join(' · ');
}

/** "1/4 nodes": current over max, where the backend reports nodes. */
export function formatNodes(target: ITarget): string {
  const nodes = target.nodes;
  if (!nodes || nodes.current === null || nodes.current === undefined) {
    return '';
  }
  const max = nodes.max ?? null;
  const noun = (max ?? nodes.current) === 1 ? 'node' : 'nodes';
  return max !== null
    ? `${nodes.current}/${max} ${noun}`
    : `${nodes.current} ${noun}`;
}

/** Time left before idle shutdown, as "idle stop in 12 min"; empty when none is set. */
export function formatIdleShutdown(target: ITarget, now: number): string {
  if (!target.idle_shutdown_at) {
    return '';
  }
  const at = Date.parse(target.idle_shutdown_at);
  if (Number.isNaN(at)) {
    return '';
  }
  const seconds = Math.round((at - now) / 1000);
  if (seconds <= 0) {
    return 'idle stop due';
  }
  return `idle stop in ${formatDuration(seconds)}`;
}

/** A countdown's time left, rounded up to whole minutes from a minute on. */
export function formatDuration(seconds: number): string {
  if (seconds < 60) {
    return `${seconds} s`;
  }
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  if (hours < 24) {
    return rest ? `${hours} h ${rest} min` : `${hours} h`;
  }
  const days = Math.floor(hours / 24);
  const restHours = hours % 24;
  return restHours ? `${days} d ${restHours} h` : `${days} d`;
}

/** A length of time gone by, as people read it: '45s', '3m 12s', '2h 05m', '3d 4h'. */
export function formatElapsed(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '—';
  }
  const total = Math.floor(seconds);
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  if (d) {
    return `${d}d ${h}h`;
  }
  if (h) {
    return `${h}h ${two(m)}m`;
  }
  return m ? `${m}m ${two(s)}s` : `${s}s`;
}

/** How long ago: 'just now', '5 min ago', '2 h ago', '3 d ago'. */
export function formatAgo(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '—';
  }
  if (seconds < 60) {
    return 'just now';
  }
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['min', 60]
  ] as const) {
    if (seconds >= size) {
      return `${Math.floor(seconds / size)} ${unit} ago`;
    }
  }
  return '—';
}

/** A moment relative to now: '5 min ago', 'just now', 'in 12 min'. */
export function formatWhen(
  iso: string | null | undefined,
  now: number
): string {
  const at = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(at)) {
    return iso ?? '—';
  }
  const seconds = Math.round((now - at) / 1000);
  return seconds >= 0 ? formatAgo(seconds) : `in ${formatDuration(-seconds)}`;
}

/** This machine's load, as its row shows it: "CPU 12% · 10.4 GB free". */
export function formatLoad(target: ITarget): string {
  const p = target.properties ?? {};
  const parts: string[] = [];
  if (typeof p.cpu_percent === 'number') {
    parts.push(`CPU ${Math.round(p.cpu_percent)}%`);
  }
  if (typeof p.memory_available_gb === 'number') {
    parts.push(`${formatNumber(p.memory_available_gb)} GB free`);
  }
  return parts.join(' · ');
}

function formatNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
