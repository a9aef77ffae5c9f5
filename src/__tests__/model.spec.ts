import { Signal } from '@lumino/signaling';

import { ComputeApi } from '../api';
import { IEventEmission, OPERATION_EVENT, TARGET_EVENT } from '../connection';
import { ComputeModel, IOperationFailure } from '../model';
import {
  FakeServer,
  KINDS,
  LOCAL_WORKSPACE,
  settle,
  target
} from './fakeServer';

const WORKSPACES = {
  workspaces: [
    LOCAL_WORKSPACE,
    {
      id: 'azure',
      kind: 'azureml',
      description: '',
      default: false,
      properties: {}
    }
  ]
};

class Bus {
  readonly stream = new Signal<this, IEventEmission>(this);
  emit(event: IEventEmission) {
    this.stream.emit(event);
  }
}

function setup(targets: Record<string, unknown>[]) {
  const server = new FakeServer();
  const bus = new Bus();
  const byName = new Map(targets.map(t => [t.name as string, t]));
  server
    .on('GET', 'workspaces', { status: 200, body: WORKSPACES })
    .on('GET', 'workspaces/local/kinds', {
      status: 200,
      body: { kinds: KINDS }
    })
    .on('GET', 'workspaces/local/targets', () => ({
      status: 200,
      body: { targets: Array.from(byName.values()) }
    }))
    .on('GET', /^workspaces\/local\/targets\/[^/]+$/, request => {
      const name = request.path.split('/').pop() as string;
      const found = byName.get(name);
      return found
        ? { status: 200, body: found }
        : {
            status: 404,
            body: {
              message: 'no such target',
              reason: 'unknown_target',
              field: null
            }
          };
    });
  const model = new ComputeModel({
    api: new ComputeApi({ serverSettings: server.settings }),
    events: bus.stream,
    workspace: '',
    reconnectDelaysMs: [10]
  });
  const targetGets = () =>
    server.requests.filter(
      r => r.method === 'GET' && /^workspaces\/local\/targets\/.+/.test(r.path)
    );
  return { server, bus, byName, model, targetGets };
}

describe('ComputeModel', () => {
  it("loads the server's default workspace and groups targets by family", async () => {
    const { model } = setup([
      target('this-machine', { kind: 'local', state: 'running' }),
      target('k10'),
      target('k2', { state: 'running' })
    ]);
    await model.refresh();
    expect(model.status).toBe('ready');
    expect(model.workspace).toBe('local');
    expect(model.workspaces.map(w => w.id)).toEqual(['local', 'azure']);
    expect(model.groups.map(g => g.family)).toEqual([
      'This machine',
      'Local kernels'
    ]);
    expect(model.groups[1].targets.map(t => t.name)).toEqual(['k2', 'k10']);
    expect(model.familyOf(model.targets.get('k2')!)).toBe('Local kernels');
  });

  it('shows a group for each kind even without targets', async () => {
    const { model } = setup([
      target('this-machine', { kind: 'local', state: 'running' })
    ]);
    await model.refresh();
    const kernels = model.groups.find(g => g.family === 'Local kernels')!;
    expect(kernels.targets).toHaveLength(0);
    expect(kernels.kinds.map(k => k.name)).toEqual(['local-kernel']);
  });

  it('puts targets of unknown kinds in Other, after the known families', async () => {
    const { model } = setup([target('x', { kind: 'mystery' }), target('k1')]);
    await model.refresh();
    expect(model.groups.map(g => g.family)).toEqual([
      'This machine',
      'Local kernels',
      'Other'
    ]);
  });

  it('refetches only the target an event names', async () => {
    const { model, bus, byName, server, targetGets } = setup([
      target('k1'),
      target('k2')
    ]);
    await model.refresh();
    const before = server.requests.length;
    byName.set('k1', target('k1', { state: 'running' }));
    bus.emit({
      schema_id: TARGET_EVENT,
      workspace: 'local',
      name: 'k1',
      kind: 'local-kernel',
      state: 'running',
      change: 'updated'
    });
    await settle();
    expect(model.targets.get('k1')!.state).toBe('running');
    expect(server.requests.length - before).toBe(1);
    expect(targetGets().map(r => r.path)).toEqual([
      'workspaces/local/targets/k1'
    ]);
  });

  it('adds a target created elsewhere and removes one whose fetch answers 404', async () => {
    const { model, bus, byName } = setup([target('k1')]);
    await model.refresh();
    byName.set('fromcli', target('fromcli', { state: 'starting' }));
    bus.emit({
      schema_id: TARGET_EVENT,
      workspace: 'local',
      name: 'fromcli',
      change: 'updated'
    });
    await settle();
    expect(model.targets.has('fromcli')).toBe(true);
    byName.delete('k1');
    bus.emit({
      schema_id: TARGET_EVENT,
      workspace: 'local',
      name: 'k1',
      change: 'updated'
    });
    await settle();
    expect(model.targets.has('k1')).toBe(false);
  });

  it('removes a target on its removal event without fetching it', async () => {
    const { model, bus, byName, targetGets } = setup([
      target('k1'),
      target('k2')
    ]);
    await model.refresh();
    byName.delete('k1');
    bus.emit({
      schema_id: TARGET_EVENT,
      workspace: 'local',
      name: 'k1',
      change: 'removed'
    });
    bus.emit({
      schema_id: OPERATION_EVENT,
      id: 'o',
      workspace: 'local',
      target: 'k2',
      action: 'delete',
      status: 'succeeded'
    });
    await settle();
    expect(Array.from(model.targets.keys())).toEqual([]);
    expect(targetGets()).toHaveLength(0);
  });

  it('ignores events of other extensions and other workspaces', async () => {
    const { model, bus, server } = setup([target('k1')]);
    await model.refresh();
    const before = server.requests.length;
    bus.emit({
      schema_id:
        'https://events.jupyter.org/jupyter_server/contents_service/v1',
      name: 'k1',
      workspace: 'local'
    });
    bus.emit({
      schema_id: TARGET_EVENT,
      workspace: 'azure',
      name: 'k1',
      change: 'updated'
    });
    await settle();
    expect(server.requests.length).toBe(before);
  });

  it('folds a burst of events for one target into at most two fetches', async () => {
    const { model, bus, targetGets } = setup([target('k1')]);
    await model.refresh();
    for (let i = 0; i < 50; i++) {
      bus.emit({
        schema_id: TARGET_EVENT,
        workspace: 'local',
        name: 'k1',
        change: 'updated'
      });
    }
    await settle(10);
    expect(targetGets().length).toBeLessThanOrEqual(2);
  });

  it('keeps a newer copy of a target over an older listing', async () => {
    const { model, server, byName } = setup([target('k1')]);
    await model.refresh();
    // A listing asked for now answers late with the old state...
    let release: () => void = () => undefined;
    const gate = new Promise<void>(resolve => (release = resolve));
    const stale = { targets: [target('k1', { state: 'stopped' })] };
    server.on('GET', 'workspaces/local/targets', async () => {
      await gate;
      return { status: 200, body: stale };
    });
    const listing = model.refresh();
    await settle();
    // ...while a fetch asked for later has already seen it running.
    byName.set('k1', target('k1', { state: 'running' }));
    await model.refreshTarget('k1');
    release();
    await listing;
    expect(model.targets.get('k1')!.state).toBe('running');
  });

  it('uses answers asked for early, and fetches anew what events named meanwhile', async () => {
    const { model, bus, byName, server, targetGets } = setup([
      target('k1'),
      target('k2'),
      target('gone')
    ]);
    model.prefetch();
    await settle();
    const asked = server.requests.map(r => `${r.method} ${r.path}`);
    expect(asked).toEqual(
      expect.arrayContaining([
        'GET workspaces',
        'GET workspaces/local/kinds',
        'GET workspaces/local/targets'
      ])
    );
    // Before the panel's first refresh: k1 starts, k3 is made, `gone` is deleted.
    byName.set('k1', target('k1', { state: 'running' }));
    byName.set('k3', target('k3'));
    byName.delete('gone');
    for (const name of ['k1', 'k3']) {
      bus.emit({
        schema_id: TARGET_EVENT,
        workspace: 'local',
        name,
        change: 'updated'
      });
    }
    bus.emit({
      schema_id: OPERATION_EVENT,
      id: 'o',
      workspace: 'local',
      target: 'gone',
      action: 'delete',
      status: 'succeeded'
    });
    await model.refresh();
    await settle();
    // The lists were not asked for twice; the targets events named were fetched one by one.
    expect(server.requests.length - asked.length).toBe(3);
    expect(targetGets().map(r => r.path.split('/').pop())).toEqual([
      'k1',
      'k3',
      'gone'
    ]);
    expect(model.workspace).toBe('local');
    expect(model.status).toBe('ready');
    expect(model.targets.get('k1')!.state).toBe('running');
    expect(Array.from(model.targets.keys()).sort()).toEqual(['k1', 'k2', 'k3']);
  });

  it('asks again when the early answers failed or were for another workspace', async () => {
    const { model, server } = setup([target('k1')]);
    server.on('GET', 'workspaces/local/targets', {
      status: 503,
      body: { message: 'busy', reason: 'unavailable', field: null }
    });
    model.prefetch();
    await settle();
    server.on('GET', 'workspaces/local/targets', {
      status: 200,
      body: { targets: [target('k1')] }
    });
    await model.refresh();
    expect(model.status).toBe('ready');
    expect(Array.from(model.targets.keys())).toEqual(['k1']);

    // The settings chose another workspace: its own lists are fetched, without waiting for
    // the default workspace's (here they never come).
    const other = setup([target('k1')]);
    other.server
      .on('GET', 'workspaces/local/targets', () => new Promise(() => undefined))
      .on('GET', 'workspaces/azure/kinds', { status: 200, body: { kinds: [] } })
      .on('GET', 'workspaces/azure/targets', {
        status: 200,
        body: { targets: [target('a1', { kind: 'compute-instance' })] }
      });
    other.model.prefetch();
    await settle();
    await other.model.refresh('azure');
    expect(other.model.workspace).toBe('azure');
    expect(Array.from(other.model.targets.keys())).toEqual(['a1']);
  });

  it('shows the progress of operations and reports failures', async () => {
    const { model, bus } = setup([target('k1', { state: 'starting' })]);
    await model.refresh();
    const failures: IOperationFailure[] = [];
    model.operationFailed.connect((_, f) => failures.push(f));
    bus.emit({
      schema_id: OPERATION_EVENT,
      id: 'op1',
      workspace: 'local',
      target: 'k1',
      action: 'start',
      status: 'running',
      progress: 'launching'
    });
    expect(model.operation('k1')).toEqual({
      id: 'op1',
      action: 'start',
      status: 'running',
      progress: 'launching'
    });
    bus.emit({
      schema_id: OPERATION_EVENT,
      id: 'op1',
      workspace: 'local',
      target: 'k1',
      action: 'start',
      status: 'failed',
      progress: '',
      error: 'kernel died'
    });
    expect(model.operation('k1')).toBeUndefined();
    expect(failures).toEqual([
      {
        workspace: 'local',
        target: 'k1',
        action: 'start',
        message: 'kernel died'
      }
    ]);
  });

  it('runs an action, tracks its operation and refetches the target', async () => {
    const { model, server, byName } = setup([target('k1')]);
    await model.refresh();
    server.on('POST', 'workspaces/local/targets/k1/start', () => {
      byName.set('k1', target('k1', { state: 'starting' }));
      return {
        status: 202,
        body: {
          operation: {
            id: 'op9',
            target: 'k1',
            workspace: 'local',
            action: 'start',
            status: 'running',
            progress: '',
            error: null,
            started: '',
            ended: null
          }
        }
      };
    });
    const op = await model.run('k1', 'start');
    expect(op.id).toBe('op9');
    expect(model.operation('k1')?.id).toBe('op9');
    await settle();
    expect(model.targets.get('k1')!.state).toBe('starting');
    expect(model.isBusy('k1')).toBe(false);
  });

  it('rejects a create with the server error, field included', async () => {
    const { model, server } = setup([]);
    await model.refresh();
    server.on('POST', 'workspaces/local/targets', {
      status: 400,
      body: {
        message: 'memory_limit_mb: must be at least 64',
        reason: 'invalid_request',
        field: '/memory_limit_mb'
      }
    });
    await expect(
      model.createTarget({
        name: 'k',
        kind: 'local-kernel',
        memory_limit_mb: 1
      })
    ).rejects.toMatchObject({
      status: 400,
      field: '/memory_limit_mb'
    });
  });

  it('switches workspace and drops answers meant for the previous one', async () => {
    const { model, server } = setup([target('k1')]);
    await model.refresh();
    server
      .on('GET', 'workspaces/azure/kinds', { status: 200, body: { kinds: [] } })
      .on('GET', 'workspaces/azure/targets', {
        status: 200,
        body: {
          targets: [target('ci1', { workspace: 'azure', kind: 'amlcompute' })]
        }
      });
    const late = model.refreshTarget('k1');
    await model.setWorkspace('azure');
    await late;
    expect(model.workspace).toBe('azure');
    expect(Array.from(model.targets.keys())).toEqual(['ci1']);
  });

  it('filters by name and remembers collapsed groups', async () => {
    const { model } = setup([
      target('alpha'),
      target('beta'),
      target('this-machine', { kind: 'local' })
    ]);
    await model.refresh();
    model.filter = 'ALP';
    expect(
      model.groups.map(g => [g.family, g.targets.map(t => t.name)])
    ).toEqual([['Local kernels', ['alpha']]]);
    model.filter = '';
    model.setCollapsed('This machine', true);
    expect(model.isCollapsed('This machine')).toBe(true);
  });

  it('goes offline when the server is unreachable and recovers by itself', async () => {
    const { model, server, byName } = setup([target('k1')]);
    await model.refresh();
    server.failNetwork = true;
    await model.refreshTarget('k1');
    expect(model.status).toBe('offline');
    byName.set('k1', target('k1', { state: 'running' }));
    server.failNetwork = false;
    await new Promise(resolve => setTimeout(resolve, 50));
    await settle();
    expect(model.status).toBe('ready');
    expect(model.targets.get('k1')!.state).toBe('running');
  });

  it('fetches everything again when the server restarted', async () => {
    const { model, server, byName } = setup([target('k1')]);
    let started = '2025-01-01T00:00:00Z';
    server.on('GET', '/base/api/status', () => ({
      status: 200,
      body: { started }
    }));
    await model.refresh();
    model.watchServer(10);
    await new Promise(resolve => setTimeout(resolve, 30));
    // Restarted meanwhile; an event about the new target was lost.
    byName.set('k2', target('k2', { state: 'running' }));
    started = '2025-01-01T01:00:00Z';
    await new Promise(resolve => setTimeout(resolve, 50));
    await settle();
    expect(Array.from(model.targets.keys()).sort()).toEqual(['k1', 'k2']);
    model.dispose();
  });

  it('waits for a target to reach a state', async () => {
    const { model, bus, byName } = setup([target('k1', { state: 'starting' })]);
    await model.refresh();
    const waiting = model.waitForState('k1', ['running'], 1000);
    byName.set('k1', target('k1', { state: 'running' }));
    bus.emit({
      schema_id: TARGET_EVENT,
      workspace: 'local',
      name: 'k1',
      change: 'updated'
    });
    expect((await waiting)?.state).toBe('running');
    expect(await model.waitForState('k1', ['stopped'], 20)).toBeNull();
  });

  it('groups a thousand targets quickly', async () => {
    const many = Array.from({ length: 1000 }, (_, i) =>
      target(`t${i}`, { state: i % 3 ? 'running' : 'stopped' })
    );
    const { model } = setup(many);
    await model.refresh();
    const start = performance.now();
    const groups = model.groups;
    expect(performance.now() - start).toBeLessThan(200);
    expect(
      groups.find(g => g.family === 'Local kernels')!.targets
    ).toHaveLength(1000);
    expect(
      groups.find(g => g.family === 'Local kernels')!.targets[2].name
    ).toBe('t2');
  });
});
