import type { ILauncher } from '@jupyterlab/launcher';
import type { KernelSpec } from '@jupyterlab/services';
import type { PartialJSONObject } from '@lumino/coreutils';
import { Signal } from '@lumino/signaling';

import { activityText, optionNote, planChoice, IChoice } from '../choice';
import { IEventEmission, OPERATION_EVENT, TARGET_EVENT } from '../connection';
import {
  KERNELSPECS_EVENT,
  KERNEL_EVENT,
  KernelEndedNotifier,
  KernelSpecsFollower,
  computeKernelOf,
  computeKernels,
  kernelSpecFor,
  mayHaveMissedNews,
  targetOfKernel
} from '../kernelspecs';
import {
  ComputeLauncherItems,
  NEW_NOTEBOOK_COMMAND,
  launcherItem
} from '../launcher';

function spec(
  name: string,
  displayName: string,
  compute?: PartialJSONObject
): KernelSpec.ISpecModel {
  return {
    name,
    display_name: displayName,
    language: 'python',
    argv: [],
    resources: {},
    metadata: compute ? { jupyter_compute: compute } : {}
  };
}

function specs(...models: KernelSpec.ISpecModel[]): KernelSpec.ISpecModels {
  return {
    default: 'python3',
    kernelspecs: Object.fromEntries(models.map(m => [m.name, m]))
  };
}

const PYTHON = spec('python3', 'Python 3 (ipykernel)');
const ANALYSIS = spec(
  'compute-analysis',
  'Python 3.11 · analysis (local kernel)',
  {
    workspace: 'local',
    target: 'analysis',
    variant: '',
    store: '/tmp/compute.db',
    category: 'Compute',
    kind: 'local-kernel'
  }
);
const VM = spec('compute-vm', 'Python 3.11 · vm (SSH)', {
  workspace: 'local',
  target: 'vm',
  variant: '',
  category: 'Compute',
  kind: 'ssh'
});

describe('kernelspecs of targets', () => {
  it('tells kernelspecs of targets from ordinary ones', () => {
    expect(computeKernelOf(PYTHON)).toBeNull();
    expect(computeKernelOf(undefined)).toBeNull();
    expect(
      computeKernelOf(spec('odd', 'Odd', { target: 42 } as never))
    ).toBeNull();
    expect(computeKernelOf(ANALYSIS)).toEqual({
      name: 'compute-analysis',
      displayName: 'Python 3.11 · analysis (local kernel)',
      workspace: 'local',
      target: 'analysis',
      variant: '',
      kind: 'local-kernel',
      category: 'Compute'
    });
  });

  it('lists them by display name, and finds the kernelspec of a target', () => {
    const all = specs(VM, PYTHON, ANALYSIS);
    expect(computeKernels(all).map(k => k.name)).toEqual([
      'compute-analysis',
      'compute-vm'
    ]);
    expect(computeKernels(null)).toEqual([]);
    expect(kernelSpecFor(all, 'local', 'vm')).toBe('compute-vm');
    expect(kernelSpecFor(all, 'azure', 'vm')).toBeNull();
    expect(kernelSpecFor(all, 'local', 'python3')).toBeNull();
    expect(targetOfKernel(all, 'compute-vm')?.target).toBe('vm');
    expect(targetOfKernel(all, 'python3')).toBeNull();
    expect(targetOfKernel(all, null)).toBeNull();
  });

  it("prefers a target's unnamed kernel over its variants", () => {
    const variant = spec('compute-gpu-py310', 'py310 · gpu', {
      target: 'gpu',
      variant: 'py310'
    });
    const plain = spec('compute-gpu', 'gpu', { target: 'gpu', variant: '' });
    expect(kernelSpecFor(specs(variant), 'local', 'gpu')).toBe(
      'compute-gpu-py310'
    );
    expect(kernelSpecFor(specs(variant, plain), 'local', 'gpu')).toBe(
      'compute-gpu'
    );
  });
});

describe('KernelSpecsFollower', () => {
  class Bus {
    readonly stream = new Signal<this, IEventEmission>(this);
  }

  function setup(
    refresh: () => Promise<void> = jest.fn(async () => undefined)
  ) {
    const bus = new Bus();
    const follower = new KernelSpecsFollower({
      events: bus.stream,
      refresh,
      fallbackDelayMs: 50
    });
    return { bus, follower, refresh };
  }

  afterEach(() => {
    jest.useRealTimers();
  });

  it('reads the kernelspecs at once when the server says they changed', async () => {
    const { bus, refresh, follower } = setup();
    bus.stream.emit({
      schema_id: KERNELSPECS_EVENT,
      written: ['compute-k1'],
      removed: []
    });
    await Promise.resolve();
    expect(refresh).toHaveBeenCalledTimes(1);
    bus.stream.emit({ schema_id: 'https://example.org/other/v1' });
    bus.stream.emit({ schema_id: OPERATION_EVENT, target: 'k1' });
    await Promise.resolve();
    expect(refresh).toHaveBeenCalledTimes(1);
    follower.dispose();
    bus.stream.emit({ schema_id: KERNELSPECS_EVENT, written: [], removed: [] });
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('reads them once a moment after a burst of target changes', () => {
    jest.useFakeTimers();
    const { bus, refresh } = setup();
    for (let i = 0; i < 5; i++) {
      bus.stream.emit({ schema_id: TARGET_EVENT, name: 'k1', state: 'x' });
      jest.advanceTimersByTime(20);
    }
    expect(refresh).not.toHaveBeenCalled();
    jest.advanceTimersByTime(60);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('reads once more after a read that was on its way', async () => {
    let release: () => void = () => undefined;
    const refresh = jest.fn(
      () =>
        new Promise<void>(resolve => {
          release = resolve;
        })
    );
    const { follower } = setup(refresh);
    const first = follower.refreshNow();
    void follower.refreshNow();
    void follower.refreshNow();
    expect(refresh).toHaveBeenCalledTimes(1);
    release();
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(refresh).toHaveBeenCalledTimes(2);
    release();
    await first;
    expect(refresh).toHaveBeenCalledTimes(2);
  });

  it('reads them once more when the page may have missed a change', async () => {
    let restored: (missed: boolean) => void = () => undefined;
    const refresh = jest.fn(async () => undefined);
    const follower = new KernelSpecsFollower({
      events: new Bus().stream,
      refresh,
      catchUpIf: new Promise<boolean>(resolve => {
        restored = resolve;
      })
    });
    await Promise.resolve();
    expect(refresh).not.toHaveBeenCalled();
    restored(true);
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(refresh).toHaveBeenCalledTimes(1);
    follower.dispose();
  });

  it('does not read them again when the last change came before the page', async () => {
    const refresh = jest.fn(async () => undefined);
    const follower = new KernelSpecsFollower({
      events: new Bus().stream,
      refresh,
      catchUpIf: Promise.resolve(false)
    });
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(refresh).not.toHaveBeenCalled();
    follower.dispose();
  });

  it('counts a change as missed unless it came well before the page began', () => {
    // The page has been open 3 s.
    expect(mayHaveMissedNews(1, 3000)).toBe(true); // after the page began
    expect(mayHaveMissedNews(4, 3000)).toBe(true); // just before: within the slack
    expect(mayHaveMissedNews(60, 3000)).toBe(false); // a minute before
  });

  it('keeps following after a read fails', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
    const refresh = jest
      .fn<Promise<void>, []>()
      .mockRejectedValueOnce(new Error('gone'))
      .mockResolvedValue(undefined);
    const { follower } = setup(refresh);
    await follower.refreshNow();
    await follower.refreshNow();
    expect(refresh).toHaveBeenCalledTimes(2);
    warn.mockRestore();
  });
});

describe('ComputeLauncherItems', () => {
  class FakeLauncher {
    items: ILauncher.IItemOptions[] = [];
    add(options: ILauncher.IItemOptions) {
      this.items.push(options);
      return {
        isDisposed: false,
        dispose: () => {
          this.items = this.items.filter(i => i !== options);
        }
      };
    }
    get kernels(): string[] {
      return this.items.map(i => String(i.args?.kernelName)).sort();
    }
  }

  class FakeSpecs {
    specs: KernelSpec.ISpecModels | null = null;
    readonly specsChanged = new Signal<this, KernelSpec.ISpecModels>(this);
    set(value: KernelSpec.ISpecModels) {
      this.specs = value;
      this.specsChanged.emit(value);
    }
  }

  it('adds an item in the Compute section for each kernel of a target', () => {
    const launcher = new FakeLauncher();
    const source = new FakeSpecs();
    source.specs = specs(PYTHON, ANALYSIS);
    const items = new ComputeLauncherItems({ launcher, specs: source });
    expect(launcher.kernels).toEqual(['compute-analysis']);
    expect(launcher.items[0]).toEqual(launcherItem(computeKernelOf(ANALYSIS)!));
    expect(launcher.items[0]).toMatchObject({
      command: NEW_NOTEBOOK_COMMAND,
      args: { isLauncher: true, kernelName: 'compute-analysis' },
      category: 'Compute'
    });
    expect(items.names).toEqual(['compute-analysis']);
  });

  it('keeps the items in step as kernelspecs come and go', () => {
    const launcher = new FakeLauncher();
    const source = new FakeSpecs();
    const items = new ComputeLauncherItems({ launcher, specs: source });
    expect(launcher.kernels).toEqual([]);

    source.set(specs(PYTHON, ANALYSIS, VM));
    expect(launcher.kernels).toEqual(['compute-analysis', 'compute-vm']);
    const vmItem = launcher.items.find(
      i => i.args?.kernelName === 'compute-vm'
    );

    // Unchanged kernels keep their item; a removed one loses it.
    source.set(specs(PYTHON, VM));
    expect(launcher.kernels).toEqual(['compute-vm']);
    expect(launcher.items[0]).toBe(vmItem);

    // A new display name (the target learned its Python version) is a new item.
    source.set(
      specs(
        PYTHON,
        spec('compute-vm', 'Python 3.12 · vm (SSH)', {
          target: 'vm',
          kind: 'ssh'
        })
      )
    );
    expect(launcher.kernels).toEqual(['compute-vm']);
    expect(launcher.items[0]).not.toBe(vmItem);

    items.dispose();
    expect(launcher.kernels).toEqual([]);
    source.set(specs(ANALYSIS));
    expect(launcher.kernels).toEqual([]);
  });
});

describe('the picker decides between the kernel and a route', () => {
  const base: IChoice = {
    choice: 'k1',
    kind: 'local-kernel',
    choiceKernel: 'compute-k1',
    kernel: 'python3',
    kernelTarget: null,
    route: 'local',
    ordinaryKernel: 'python3'
  };

  it("gives a kernel-capable target the notebook's kernel", () => {
    expect(planChoice(base)).toEqual({ kernel: 'compute-k1' });
    expect(
      planChoice({
        ...base,
        choice: 'vm',
        kind: 'ssh',
        choiceKernel: 'compute-vm'
      })
    ).toEqual({ kernel: 'compute-vm' });
    // From another target's kernel, and from a route the old kernel had.
    expect(
      planChoice({
        ...base,
        kernel: 'compute-k2',
        kernelTarget: 'k2',
        route: 'dask1'
      })
    ).toEqual({ kernel: 'compute-k1' });
    // Restored from metadata of another workspace: the kernelspec alone says.
    expect(planChoice({ ...base, kind: null })).toEqual({
      kernel: 'compute-k1'
    });
  });

  it('routes through the ordinary kernel where no kernel can run', () => {
    const dask = {
      ...base,
      choice: 'dask1',
      kind: 'dask-cluster',
      choiceKernel: null
    };
    expect(planChoice(dask)).toEqual({ route: 'dask1' });
    expect(planChoice({ ...dask, route: 'dask1' })).toBeNull();
    expect(planChoice({ ...dask, kind: 'compute-cluster' })).toEqual({
      route: 'dask1'
    });
    // From a target's kernel, the ordinary kernel comes back first.
    expect(
      planChoice({ ...dask, kernel: 'compute-k1', kernelTarget: 'k1' })
    ).toEqual({ kernel: 'python3', route: 'dask1' });
    // A batch kind is routed to even should it offer a kernelspec.
    expect(planChoice({ ...dask, choiceKernel: 'compute-dask1' })).toEqual({
      route: 'dask1'
    });
    // A local-kernel target whose kernelspec is not known: routed, as before.
    expect(planChoice({ ...base, choiceKernel: null })).toEqual({
      route: 'k1'
    });
  });

  it('goes back to local from a kernel or from a route', () => {
    const local = { ...base, choice: 'local', kind: null, choiceKernel: null };
    expect(
      planChoice({ ...local, kernel: 'compute-k1', kernelTarget: 'k1' })
    ).toEqual({ kernel: 'python3' });
    expect(
      planChoice({
        ...local,
        kernel: 'compute-k1',
        kernelTarget: 'k1',
        ordinaryKernel: 'julia'
      })
    ).toEqual({ kernel: 'julia' });
    expect(planChoice({ ...local, route: 'dask1' })).toEqual({
      route: 'local'
    });
    expect(planChoice(local)).toBeNull();
  });

  it('only undoes a route when the kernel already runs on the target', () => {
    const there = { ...base, kernel: 'compute-k1', kernelTarget: 'k1' };
    expect(planChoice(there)).toBeNull();
    expect(planChoice({ ...there, route: 'dask1' })).toEqual({
      route: 'local'
    });
  });

  it('says how cells reach each target, and what is under way', () => {
    expect(optionNote('dask-cluster', false)).toBe(
      'each cell runs as a new task'
    );
    expect(optionNote('compute-cluster', false)).toBe(
      'each cell runs as a new task'
    );
    expect(optionNote('local-kernel', true)).toBe(
      "the notebook's kernel runs there"
    );
    expect(optionNote('ssh', false)).toBe("the notebook's kernel runs there");
    expect(optionNote('jupyter', false)).toBe(
      "cells are sent there from the notebook's kernel"
    );
    expect(activityText({ activity: 'idle', startingTarget: null })).toBe('');
    expect(activityText({ activity: 'idle', startingTarget: 'k1' })).toBe(
      "starting 'k1'…"
    );
    expect(activityText({ activity: 'switching', startingTarget: 'k1' })).toBe(
      "starting 'k1'…"
    );
    expect(activityText({ activity: 'switching', startingTarget: null })).toBe(
      'starting kernel…'
    );
    expect(activityText({ activity: 'routing', startingTarget: null })).toBe(
      'routing…'
    );
  });
});

describe('KernelEndedNotifier', () => {
  class Bus {
    readonly stream = new Signal<this, IEventEmission>(this);
  }

  function setup(open: string[]) {
    const bus = new Bus();
    const notify = jest.fn();
    const notifier = new KernelEndedNotifier({
      events: bus.stream,
      isOurs: id => open.includes(id),
      notify
    });
    return { bus, notify, notifier };
  }

  function ended(kernelId: string, reason: unknown): IEventEmission {
    return {
      schema_id: KERNEL_EVENT,
      kernel_id: kernelId,
      workspace: 'local',
      target: 'k1',
      reason
    } as unknown as IEventEmission;
  }

  it("says why one of this window's kernels ended, as a sentence", () => {
    const { bus, notify } = setup(['abc']);
    bus.stream.emit(
      ended(
        'abc',
        "the kernel on 'k1' died: killed by SIGKILL (signal 9) - often the out-of-memory killer"
      )
    );
    expect(notify).toHaveBeenCalledWith(
      "The kernel on 'k1' died: killed by SIGKILL (signal 9) - often the out-of-memory killer"
    );
  });

  it('leaves the kernels of other windows, other events and empty reasons alone', () => {
    const { bus, notify, notifier } = setup(['abc']);
    bus.stream.emit(ended('other', 'the target was stopped'));
    bus.stream.emit(ended('abc', ''));
    bus.stream.emit(ended('abc', 42));
    bus.stream.emit({
      ...ended('abc', 'the target was stopped'),
      schema_id: 'https://events.jupyter.org/jupyter_compute/target/v1'
    } as IEventEmission);
    expect(notify).not.toHaveBeenCalled();
    notifier.dispose();
    bus.stream.emit(ended('abc', 'the target was stopped'));
    expect(notify).not.toHaveBeenCalled();
  });
});
