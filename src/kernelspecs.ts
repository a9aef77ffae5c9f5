/**
 * The kernelspecs the server writes for targets that can host a kernel: which of JupyterLab's
 * kernelspecs are such, which target each runs on, and a follower that has JupyterLab read the
 * kernelspecs again as soon as the server says they changed.
 */
import type { KernelSpec } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

import { EVENT_PREFIX, IEventEmission, TARGET_EVENT } from './connection';

/** Sent by the server after it wrote or removed kernelspecs of targets. */
export const KERNELSPECS_EVENT = `${EVENT_PREFIX}kernelspecs/v1`;

/** Sent by the server when a notebook's kernel on a target ended for a reason of its own. */
export const KERNEL_EVENT = `${EVENT_PREFIX}kernel/v1`;

/** The key of a target's kernelspec metadata that says which target it runs on. */
export const SPEC_METADATA_KEY = 'jupyter_compute';

/** The Launcher section that lists the kernels of targets. */
export const COMPUTE_CATEGORY = 'Compute';

/** Kinds whose targets host a kernel of their own for each notebook. */
export const KERNEL_KINDS: ReadonlySet<string> = new Set([
  'local-kernel',
  'ssh'
]);

/** Kinds that run each routed cell afresh, as a task or job, with nothing kept between cells. */
export const BATCH_KINDS: ReadonlySet<string> = new Set([
  'dask-cluster',
  'dask',
  'compute-cluster'
]);

/** A kernelspec of a target, as the kernelspec's metadata describes it. */
export interface IComputeKernel {
  /** The kernelspec's name (`compute-…`). */
  name: string;
  displayName: string;
  workspace: string;
  target: string;
  /** Which of the target's kernels, when it offers several; empty for its only one. */
  variant: string;
  /** The target's kind, when the kernelspec says. */
  kind: string;
  /** The Launcher section the kernel is shown in. */
  category: string;
}

/** The target a kernelspec runs its kernels on, or null for an ordinary kernelspec. */
export function computeKernelOf(
  spec: KernelSpec.ISpecModel | null | undefined
): IComputeKernel | null {
  const meta = (spec?.metadata as Record<string, unknown> | undefined)?.[
    SPEC_METADATA_KEY
  ] as Record<string, unknown> | undefined;
  if (
    !spec ||
    !meta ||
    typeof meta !== 'object' ||
    typeof meta.target !== 'string' ||
    !meta.target
  ) {
    return null;
  }
  const text = (value: unknown, fallback: string): string =>
    typeof value === 'string' && value ? value : fallback;
  return {
    name: spec.name,
    displayName: text(spec.display_name, spec.name),
    workspace: text(meta.workspace, 'local'),
    target: meta.target,
    variant: text(meta.variant, ''),
    kind: text(meta.kind, ''),
    category: text(meta.category, COMPUTE_CATEGORY)
  };
}

/** Every kernelspec of a target, by display name. */
export function computeKernels(
  specs: KernelSpec.ISpecModels | null | undefined
): IComputeKernel[] {
  const found: IComputeKernel[] = [];
  for (const [name, spec] of Object.entries(specs?.kernelspecs ?? {})) {
    // A kernelspec is keyed by its name; one that says otherwise is read under its key.
    const kernel = computeKernelOf(spec ? { ...spec, name } : spec);
    if (kernel) {
      found.push(kernel);
    }
  }
  return found.sort(
    (a, b) =>
      a.displayName.localeCompare(b.displayName) || a.name.localeCompare(b.name)
  );
}

/**
 * The kernelspec of a kernel on `target`, or null when the target offers none (yet). A target
 * that offers several gives its unnamed variant, else the first by name.
 */
export function kernelSpecFor(
  specs: KernelSpec.ISpecModels | null | undefined,
  workspace: string,
  target: string
): string | null {
  const offered = computeKernels(specs)
    .filter(k => k.target === target && k.workspace === workspace)
    .sort(
      (a, b) =>
        Number(a.variant !== '') - Number(b.variant !== '') ||
        a.name.localeCompare(b.name)
    );
  return offered.length > 0 ? offered[0].name : null;
}

/** The target a kernelspec named `name` runs on, or null. */
export function targetOfKernel(
  specs: KernelSpec.ISpecModels | null | undefined,
  name: string | null | undefined
): IComputeKernel | null {
  if (!name) {
    return null;
  }
  const spec = specs?.kernelspecs[name];
  return spec ? computeKernelOf({ ...spec, name }) : null;
}

/** Slack for the request's time and the page's own start before it counted its age. */
const NEWS_MARGIN_MS = 5000;

/**
 * Whether a page may have missed the server's last change of targets or kernelspecs: it did
 * unless that change came well before the page began, when JupyterLab's first read of the
 * kernelspecs already held it. `secondsSinceChange` is the server's figure (`GET
 * /kernelspecs/news`), `pageAgeMs` how long the page has been open (`performance.now()`).
 */
export function mayHaveMissedNews(
  secondsSinceChange: number,
  pageAgeMs: number
): boolean {
  return secondsSinceChange * 1000 <= pageAgeMs + NEWS_MARGIN_MS;
}

/** How long after a target changed the kernelspecs are read again, should their own event not come. */
const FALLBACK_DELAY_MS = 1000;

/**
 * Reads the kernelspecs again when the server says it rewrote them, and a moment after any
 * target changed: an event sent while the event socket was reconnecting is never delivered,
 * and the next target change then still brings the list in step.
 */
export class KernelSpecsFollower implements IDisposable {
  constructor(options: KernelSpecsFollower.IOptions) {
    this._refresh = options.refresh;
    this._delay = options.fallbackDelayMs ?? FALLBACK_DELAY_MS;
    this._events = options.events ?? null;
    this._events?.connect(this._onEvent, this);
    // A change the server announced before this page was listening (between JupyterLab's first
    // read of the kernelspecs and its event stream opening) is caught up with once.
    options.catchUpIf?.then(missed => {
      if (missed && !this._isDisposed) {
        void this.refreshNow();
      }
    });
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  handleEvent(event: IEventEmission): void {
    if (this._isDisposed || typeof event?.schema_id !== 'string') {
      return;
    }
    if (event.schema_id === KERNELSPECS_EVENT) {
      void this.refreshNow();
    } else if (event.schema_id === TARGET_EVENT) {
      this._later();
    }
  }

  /**
   * Read the kernelspecs now. A call while a read is on its way asks for one more after it:
   * that one may have been answered before the server's latest write.
   */
  async refreshNow(): Promise<void> {
    this._cancelLater();
    if (this._running) {
      this._again = true;
      return this._running;
    }
    const run = async () => {
      try {
        do {
          this._again = false;
          try {
            await this._refresh();
          } catch (error) {
            console.warn(
              'jupyter_compute: could not read the kernelspecs',
              error
            );
          }
        } while (this._again && !this._isDisposed);
      } finally {
        this._running = null;
      }
    };
    this._running = run();
    return this._running;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._cancelLater();
    this._events?.disconnect(this._onEvent, this);
  }

  private _onEvent(_: unknown, event: IEventEmission): void {
    this.handleEvent(event);
  }

  private _later(): void {
    this._cancelLater();
    this._timer = setTimeout(() => {
      this._timer = null;
      void this.refreshNow();
    }, this._delay);
  }

  private _cancelLater(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _refresh: () => Promise<void>;
  private _delay: number;
  private _events: ISignal<unknown, IEventEmission> | null;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _running: Promise<void> | null = null;
  private _again = false;
  private _isDisposed = false;
}

export namespace KernelSpecsFollower {
  export interface IOptions {
    /** Reads the kernelspecs again (`serviceManager.kernelspecs.refreshSpecs`). */
    refresh: () => Promise<void>;
    /** JupyterLab's event stream (`serviceManager.events.stream`). */
    events?: ISignal<unknown, IEventEmission>;
    fallbackDelayMs?: number;
    /** If this resolves true (the page may have missed a change), the kernelspecs are read once more. */
    catchUpIf?: Promise<boolean>;
  }
}

/**
 * Tells the person why a kernel of theirs on a target ended without being asked to (its target
 * stopped, its memory limit, the out-of-memory killer): JupyterLab itself only says that the
 * kernel died. Kernels of other JupyterLab windows and servers are left to those.
 */
export class KernelEndedNotifier implements IDisposable {
  constructor(options: KernelEndedNotifier.IOptions) {
    this._isOurs = options.isOurs;
    this._notify = options.notify;
    this._events = options.events;
    this._events.connect(this._onEvent, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  handleEvent(event: IEventEmission): void {
    if (
      this._isDisposed ||
      event?.schema_id !== KERNEL_EVENT ||
      typeof event.kernel_id !== 'string' ||
      typeof event.reason !== 'string' ||
      !event.reason ||
      !this._isOurs(event.kernel_id)
    ) {
      return;
    }
    const reason = event.reason;
    this._notify(reason.charAt(0).toUpperCase() + reason.slice(1));
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._events.disconnect(this._onEvent, this);
  }

  private _onEvent(_: unknown, event: IEventEmission): void {
    this.handleEvent(event);
  }

  private _isOurs: (kernelId: string) => boolean;
  private _notify: (message: string) => void;
  private _events: ISignal<unknown, IEventEmission>;
  private _isDisposed = false;
}

export namespace KernelEndedNotifier {
  export interface IOptions {
    /** JupyterLab's event stream (`serviceManager.events.stream`). */
    events: ISignal<unknown, IEventEmission>;
    /** Whether a kernel id is one this JupyterLab has open. */
    isOurs: (kernelId: string) => boolean;
    /** Shows the message (JupyterLab's `Notification.warning`). */
    notify: (message: string) => void;
  }
}
