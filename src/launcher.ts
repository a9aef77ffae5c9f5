/**
 * The Launcher's "Compute" section: one item per kernelspec of a target, each creating a
 * notebook whose kernel runs on that target, kept in step as the kernelspecs change.
 */
import type { ILauncher } from '@jupyterlab/launcher';
import type { KernelSpec } from '@jupyterlab/services';
import type { LabIcon } from '@jupyterlab/ui-components';
import type { CommandRegistry } from '@lumino/commands';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

import { IComputeKernel, computeKernels, targetOfKernel } from './kernelspecs';

/** Creates a notebook with a target's kernel; the Launcher's items run it. */
export const NEW_NOTEBOOK_COMMAND = 'jupyter-compute:new-notebook';

/** Where the Compute section goes: after Notebook (0), before Console (20). */
const CATEGORY_RANK = 10;

/** What the items need of JupyterLab's kernelspec manager. */
export interface ISpecsSource {
  readonly specs: KernelSpec.ISpecModels | null;
  readonly specsChanged: ISignal<unknown, KernelSpec.ISpecModels>;
}

/** What the items need of the Launcher. */
export interface ILauncherLike {
  add(options: ILauncher.IItemOptions): IDisposable;
}

/** The Launcher item of one kernelspec of a target. */
export function launcherItem(kernel: IComputeKernel): ILauncher.IItemOptions {
  return {
    command: NEW_NOTEBOOK_COMMAND,
    args: { isLauncher: true, kernelName: kernel.name },
    category: kernel.category,
    categoryRank: CATEGORY_RANK,
    metadata: {
      kernel: {
        jupyter_compute: {
          workspace: kernel.workspace,
          target: kernel.target,
          variant: kernel.variant,
          kind: kernel.kind
        }
      }
    }
  };
}

/** Keeps one Launcher item per kernelspec of a target, and none for kernelspecs that went. */
export class ComputeLauncherItems implements IDisposable {
  constructor(options: ComputeLauncherItems.IOptions) {
    this._launcher = options.launcher;
    this._specs = options.specs;
    this._specs.specsChanged.connect(this._onSpecsChanged, this);
    this.update(this._specs.specs);
  }

  /** The kernelspec names that have an item now, in no particular order. */
  get names(): string[] {
    return Array.from(this._items.keys());
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Add the items of new kernelspecs, replace those whose text changed, drop the others. */
  update(specs: KernelSpec.ISpecModels | null): void {
    if (this._isDisposed) {
      return;
    }
    const wanted = new Map(computeKernels(specs).map(k => [k.name, k]));
    for (const [name, item] of Array.from(this._items)) {
      const kernel = wanted.get(name);
      if (!kernel || signature(kernel) !== item.signature) {
        item.disposable.dispose();
        this._items.delete(name);
      }
    }
    for (const [name, kernel] of wanted) {
      if (!this._items.has(name)) {
        this._items.set(name, {
          signature: signature(kernel),
          disposable: this._launcher.add(launcherItem(kernel))
        });
      }
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._specs.specsChanged.disconnect(this._onSpecsChanged, this);
    for (const item of this._items.values()) {
      item.disposable.dispose();
    }
    this._items.clear();
  }

  private _onSpecsChanged(_: unknown, specs: KernelSpec.ISpecModels): void {
    this.update(specs);
  }

  private _launcher: ILauncherLike;
  private _specs: ISpecsSource;
  private _items = new Map<
    string,
    { signature: string; disposable: IDisposable }
  >();
  private _isDisposed = false;
}

export namespace ComputeLauncherItems {
  export interface IOptions {
    launcher: ILauncherLike;
    specs: ISpecsSource;
  }
}

/** The Launcher sorts and labels an item when it is added: a new text needs a new item. */
function signature(kernel: IComputeKernel): string {
  return JSON.stringify([kernel.displayName, kernel.category]);
}

/**
 * The command the items run: a new notebook whose kernel is the given kernelspec, labelled
 * with the kernelspec's display name, which names the target.
 */
export function addNewNotebookCommand(
  commands: CommandRegistry,
  specs: ISpecsSource,
  icon: LabIcon
): IDisposable {
  const kernelOf = (args: ReadonlyPartialJSONObject) =>
    targetOfKernel(specs.specs, String(args.kernelName ?? ''));
  return commands.addCommand(NEW_NOTEBOOK_COMMAND, {
    label: args => kernelOf(args)?.displayName ?? 'New notebook on a target',
    caption: args => {
      const kernel = kernelOf(args);
      return kernel
        ? `Create a notebook whose kernel runs on '${kernel.target}'`
        : 'Create a notebook whose kernel runs on a compute target';
    },
    icon,
    isEnabled: args => kernelOf(args) !== null,
    execute: args =>
      commands.execute('notebook:create-new', {
        kernelName: String(args.kernelName ?? ''),
        ...(typeof args.cwd === 'string' ? { cwd: args.cwd } : {})
      }),
    describedBy: {
      args: {
        type: 'object',
        properties: {
          kernelName: {
            type: 'string',
            description: 'The kernelspec of a target (compute-…)'
          },
          cwd: { type: 'string', description: 'Folder of the new notebook' }
        },
        required: ['kernelName']
      }
    }
  });
}
