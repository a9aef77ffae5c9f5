/**
 * How the toolbar picker reaches the target chosen for a notebook: by changing the notebook's
 * kernel to a kernel on the target, or by routing the cells of its ordinary kernel there with
 * `%compute use`; and what the picker says meanwhile.
 */
import { BATCH_KINDS, KERNEL_KINDS } from './kernelspecs';
import { LOCAL } from './route';

/** Where the notebook stands, and what was picked. */
export interface IChoice {
  /** The target picked, or `local`. */
  choice: string;
  /** The picked target's kind, when the sidebar lists it. */
  kind: string | null;
  /** The kernelspec of a kernel on the picked target, when there is one. */
  choiceKernel: string | null;
  /** The notebook's kernelspec now. */
  kernel: string | null;
  /** The target the notebook's kernel runs on, when it is a kernel of a target. */
  kernelTarget: string | null;
  /** Where the kernel's magics route cells now; `local` when they do not. */
  route: string;
  /** The kernelspec to go back to for the notebook's ordinary kernel. */
  ordinaryKernel: string;
}

/** What to do, in this order; null when there is nothing to do. */
export interface IPlan {
  /** Change the notebook's kernel to this kernelspec. */
  kernel?: string;
  /** Then route its cells here with `%compute use`. */
  route?: string;
}

/**
 * Whether a picked target gets the notebook's kernel. Its kernelspec is the server's word that
 * it hosts kernels (local-kernel and ssh targets); a kind that runs each cell as a batch task
 * never does.
 */
export function hostsKernel(
  kind: string | null,
  choiceKernel: string | null
): boolean {
  return choiceKernel !== null && (kind === null || !BATCH_KINDS.has(kind));
}

/**
 * The steps that make the next cell run on `choice`. A target that can host a kernel gets the
 * notebook's kernel; any other target is reached through the notebook's ordinary kernel, which
 * comes back first if a target's kernel has the notebook.
 */
export function planChoice(c: IChoice): IPlan | null {
  if (c.choice === LOCAL) {
    if (c.kernelTarget !== null) {
      return { kernel: c.ordinaryKernel };
    }
    return c.route !== LOCAL ? { route: LOCAL } : null;
  }
  if (hostsKernel(c.kind, c.choiceKernel)) {
    if (c.kernel === c.choiceKernel) {
      // Already the target's kernel: only a route it was given elsewhere is left to undo.
      return c.route !== LOCAL ? { route: LOCAL } : null;
    }
    return { kernel: c.choiceKernel as string };
  }
  if (c.kernelTarget !== null) {
    return { kernel: c.ordinaryKernel, route: c.choice };
  }
  return c.route === c.choice ? null : { route: c.choice };
}

/** What an option of the picker says of how cells reach its target. */
export function optionNote(kind: string | null, hasKernel: boolean): string {
  if (kind !== null && BATCH_KINDS.has(kind)) {
    return 'each cell runs as a new task';
  }
  if (hasKernel || (kind !== null && KERNEL_KINDS.has(kind))) {
    return "the notebook's kernel runs there";
  }
  return "cells are sent there from the notebook's kernel";
}

export type PickerActivity = 'idle' | 'starting' | 'routing' | 'switching';

/** What the picker shows beside the target while something is under way; empty when nothing is. */
export function activityText(options: {
  activity: PickerActivity;
  /** The target being started for the notebook, if one is. */
  startingTarget: string | null;
}): string {
  const { activity, startingTarget } = options;
  if (startingTarget) {
    return `starting '${startingTarget}'…`;
  }
  switch (activity) {
    case 'starting':
      return 'starting…';
    case 'switching':
      return 'starting kernel…';
    case 'routing':
      return 'routing…';
    default:
      return '';
  }
}
