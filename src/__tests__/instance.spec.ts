import { ServerConnection } from '@jupyterlab/services';

import { ComputeApi, ITarget } from '../api';
import {
  IIdleShutdown,
  describeActivity,
  describeIdleShutdown,
  idleShutdownOf
} from '../components/InstanceCard';
import { sshCommand } from '../components/ApplicationLinks';
import { ComputeModel } from '../model';
import { ComputeApiError } from '../request';
import { FakeServer, KINDS, target } from './fakeServer';

const CONSEQUENCE =
  "'ci1' is the compute instance this runs on. Stopping it ends this JupyterLab session.";

const REFUSAL = {
  message: `${CONSEQUENCE} Send it again with "confirm": true to go ahead.`,
  reason: 'confirmation_required',
  field: null,
  details: { consequence: CONSEQUENCE }
};

const OPERATION = {
  id: 'op1',
  target: 'ci1',
  workspace: 'ws',
  action: 'stop',
  status: 'running',
  progress: '',
  error: null,
  started: '2025-01-01T00:00:00+00:00',
  ended: null
};

/** The server's rule for the instance it runs on: refused until confirmed. */
function selfStop(server: FakeServer, method: string, path: string): void {
  server.on(method, path, request => {
    const body = request.body as { confirm?: boolean } | undefined;
    return body?.confirm === true
      ? { status: 202, body: { operation: OPERATION } }
      : { status: 409, body: REFUSAL };
  });
}

describe('stopping the compute instance this runs on', () => {
  let server: FakeServer;
  let urls: string[];
  let api: ComputeApi;

  beforeEach(() => {
    server = new FakeServer();
    urls = [];
    // The fake server keeps paths only: record the URLs, query included, on the way.
    const settings = ServerConnection.makeSettings({
      ...server.settings,
      fetch: ((input: RequestInfo, init?: RequestInit) => {
        urls.push(input instanceof Request ? input.url : String(input));
        return server.settings.fetch(input, init);
      }) as typeof fetch
    });
    api = new ComputeApi({ serverSettings: settings });
  });

  it('carries the consequence of a confirmation_required answer', async () => {
    selfStop(server, 'POST', 'workspaces/ws/targets/ci1/stop');
    const error = await api.stopTarget('ws', 'ci1').catch(e => e);
    expect(error).toBeInstanceOf(ComputeApiError);
    expect(error.status).toBe(409);
    expect(error.reason).toBe('confirmation_required');
    expect(error.details).toEqual({ consequence: CONSEQUENCE });
    expect(server.requests[0].body).toBeUndefined();
  });

  it('sends confirm only when asked to', async () => {
    selfStop(server, 'POST', 'workspaces/ws/targets/ci1/stop');
    selfStop(server, 'POST', 'workspaces/ws/targets/ci1/restart');
    const op = await api.stopTarget('ws', 'ci1', { confirm: true });
    expect(op.id).toBe('op1');
    expect(server.requests[0].body).toEqual({ confirm: true });
    await api.restartTarget('ws', 'ci1', { confirm: true });
    expect(server.requests[1].body).toEqual({ confirm: true });
    await api.restartTarget('ws', 'ci1').catch(e => e);
    expect(server.requests[2].body).toBeUndefined();
  });

  it('confirms a delete in the query, as DELETE has no body', async () => {
    server.on('DELETE', 'workspaces/ws/targets/ci1', {
      status: 202,
      body: { operation: { ...OPERATION, action: 'delete' } }
    });
    await api.deleteTarget('ws', 'ci1');
    await api.deleteTarget('ws', 'ci1', { confirm: true });
    const [plain, confirmed] = urls.map(u => new URL(u));
    expect(plain.pathname).toBe(
      '/base/jupyter-compute/workspaces/ws/targets/ci1'
    );
    expect(plain.searchParams.get('confirm')).toBeNull();
    expect(confirmed.pathname).toBe(plain.pathname);
    expect(confirmed.searchParams.get('confirm')).toBe('true');
  });

  it('lets the model resend a refused action with confirm', async () => {
    const me = target('ci1', {
      workspace: 'ws',
      kind: 'local-kernel',
      state: 'running',
      properties: { this_instance: true }
    });
    server
      .on('GET', 'workspaces', {
        status: 200,
        body: {
          workspaces: [
            {
              id: 'ws',
              kind: 'azureml',
              description: '',
              default: true,
              properties: {}
            }
          ],
          this_instance: { name: 'ci1', workspace: 'ws' }
        }
      })
      .on('GET', 'workspaces/ws/kinds', { status: 200, body: { kinds: KINDS } })
      .on('GET', 'workspaces/ws/targets', {
        status: 200,
        body: { targets: [me] }
      })
      .on('GET', 'workspaces/ws/targets/ci1', { status: 200, body: me });
    selfStop(server, 'POST', 'workspaces/ws/targets/ci1/stop');
    const model = new ComputeModel({ api, workspace: 'ws' });
    try {
      await model.refresh();
      expect(model.thisInstance?.name).toBe('ci1');
      const refused = await model.run('ci1', 'stop').catch(e => e);
      expect(refused.reason).toBe('confirmation_required');
      // A refusal changes nothing: the target is not marked as stopping.
      expect(model.targets.get('ci1')?.state).toBe('running');
      expect(model.isBusy('ci1')).toBe(false);
      const op = await model.run('ci1', 'stop', { confirm: true });
      expect(op.id).toBe('op1');
      expect(model.targets.get('ci1')?.state).toBe('stopping');
    } finally {
      model.dispose();
    }
  });
});

describe('the pinned instance', () => {
  const NOW = Date.parse('2025-06-01T12:00:00Z');
  const idle = (extra: Partial<IIdleShutdown>): IIdleShutdown => ({
    minutes: 60,
    at: null,
    idle_since: null,
    state: 'unknown',
    active: [],
    counts_as_activity: [],
    activity: null,
    ...extra
  });

  it('counts down to the idle shutdown', () => {
    const text = describeIdleShutdown(
      idle({ state: 'counting', at: '2025-06-01T12:42:10Z' }),
      NOW
    );
    expect(text).toMatch(/^Idle shutdown in 43 min \(at /);
    expect(
      describeIdleShutdown(
        idle({ state: 'counting', at: '2025-06-01T11:59:00Z' }),
        NOW
      )
    ).toBe('Idle shutdown is due');
  });

  it('says why it does not count down', () => {
    expect(describeIdleShutdown(null, NOW)).toBe('No idle shutdown is set');
    expect(
      describeIdleShutdown(idle({ minutes: null, state: 'off' }), NOW)
    ).toBe('No idle shutdown is set');
    expect(
      describeIdleShutdown(
        idle({ state: 'active', active: ['an Azure ML job is running'] }),
        NOW
      )
    ).toBe(
      'Not idle: an Azure ML job is running. Idle shutdown after 1 h without activity'
    );
    expect(describeIdleShutdown(idle({ state: 'unknown' }), NOW)).toBe(
      'Idle shutdown after 1 h without activity'
    );
  });

  it('describes each kind of activity, and what cannot be seen', () => {
    const activity = {
      kernels: { count: 2, busy: 1 },
      terminals: { count: 0 },
      jobs: { running: false },
      connections: { notebooks: 3, ssh: null, vscode: 1 },
      last_activity: null
    };
    expect(describeActivity('kernels', activity)).toBe(
      '2 open, 1 running code'
    );
    expect(describeActivity('terminals', activity)).toBe('0 open');
    expect(describeActivity('jobs', activity)).toBe('none running');
    expect(describeActivity('connections', activity)).toBe(
      'SSH not visible, 1 VS Code, 3 notebook'
    );
    expect(describeActivity('kernels', null)).toBe('');
  });

  it('reads idle shutdown and the SSH command from the target', () => {
    const t = target('ci1', {
      state: 'running',
      properties: {
        idle_shutdown: idle({ state: 'counting' }),
        ssh: { public_access: true, admin_username: 'azureuser', port: 50000 },
        addresses: { public: '203.0.113.10', private: '10.0.0.4' }
      }
    }) as unknown as ITarget;
    expect(idleShutdownOf(t)?.state).toBe('counting');
    expect(sshCommand(t)).toBe('ssh -p 50000 azureuser@203.0.113.10');
    const closed = {
      ...t,
      properties: { ...t.properties, ssh: { public_access: false } }
    };
    expect(sshCommand(closed)).toBe('');
    expect(idleShutdownOf({ ...t, properties: {} })).toBeNull();
  });
});
