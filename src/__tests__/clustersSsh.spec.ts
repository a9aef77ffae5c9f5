import { ComputeApi, IKind, ITarget } from '../api';
import { applicationLinks } from '../components/DetailsView';
import {
  formatWorkers,
  scaleChanges,
  scaleFields,
  scaleValues,
  validateScale
} from '../components/ScaleControl';
import {
  hostKeyChallenge,
  keyProblem,
  sshAddress
} from '../components/SshAttach';
import { Signal } from '@lumino/signaling';

import { IEventEmission, OPERATION_EVENT } from '../connection';
import { ComputeModel } from '../model';
import { ComputeApiError } from '../request';
import {
  FakeServer,
  KINDS,
  LOCAL_WORKSPACE,
  MANAGED_OPERATIONS,
  settle,
  target
} from './fakeServer';

/** `dask-cluster` as the server describes it (the scale fields of its pydantic schema). */
const DASK_CLUSTER: IKind = {
  name: 'dask-cluster',
  family: 'Clusters',
  description: 'A Dask cluster on this machine.',
  managed: true,
  operations: MANAGED_OPERATIONS,
  update_fields: [
    'description',
    'idle_seconds_before_scaledown',
    'max_nodes',
    'min_nodes',
    'tags'
  ],
  create_schema: {
    type: 'object',
    required: ['name'],
    additionalProperties: false,
    properties: {
      name: { type: 'string', title: 'Name' },
      min_nodes: {
        type: 'integer',
        minimum: 0,
        maximum: 256,
        default: 0,
        title: 'Min Nodes'
      },
      max_nodes: {
        type: 'integer',
        minimum: 1,
        maximum: 256,
        default: 4,
        title: 'Max Nodes'
      },
      threads_per_node: {
        type: 'integer',
        minimum: 1,
        maximum: 256,
        default: 2,
        title: 'Threads Per Node'
      }
    }
  }
};

function cluster(extra: Record<string, unknown> = {}): ITarget {
  return target('dc', {
    kind: 'dask-cluster',
    state: 'running',
    nodes: { current: 1, min: 1, max: 2, idle: 1 },
    properties: { min_nodes: 1, max_nodes: 2, threads_per_node: 1 },
    ...extra
  }) as unknown as ITarget;
}

describe('the scale control', () => {
  const fields = scaleFields(DASK_CLUSTER);

  it('offers min and max nodes with the limits of the kind', () => {
    expect(fields.map(f => f.name)).toEqual(['min_nodes', 'max_nodes']);
    expect(fields[0].minimum).toBe(0);
    expect(fields[1].minimum).toBe(1);
    expect(fields[1].maximum).toBe(256);
  });

  it('is not offered for kinds that cannot change their scale', () => {
    const attached: IKind = {
      ...DASK_CLUSTER,
      name: 'dask',
      update_fields: ['description', 'tags']
    };
    expect(scaleFields(attached)).toEqual([]);
    expect(scaleFields({ ...DASK_CLUSTER, operations: ['create'] })).toEqual(
      []
    );
    expect(scaleFields(KINDS[1] as unknown as IKind)).toEqual([]);
    expect(scaleFields(undefined)).toEqual([]);
  });

  it('starts from the target spec', () => {
    expect(scaleValues(cluster())).toEqual({ min_nodes: '1', max_nodes: '2' });
  });

  it('accepts whole numbers within the limits with min <= max', () => {
    expect(validateScale(fields, { min_nodes: '1', max_nodes: '3' })).toEqual(
      {}
    );
    expect(validateScale(fields, { min_nodes: '2', max_nodes: '2' })).toEqual(
      {}
    );
    expect(validateScale(fields, { min_nodes: '0', max_nodes: '256' })).toEqual(
      {}
    );
  });

  it('refuses what the server would refuse, before sending', () => {
    expect(validateScale(fields, { min_nodes: '1.5', max_nodes: '2' })).toEqual(
      { min_nodes: 'Enter a whole number' }
    );
    expect(validateScale(fields, { min_nodes: 'x', max_nodes: '2' })).toEqual({
      min_nodes: 'Enter a number'
    });
    expect(validateScale(fields, { min_nodes: '-1', max_nodes: '2' })).toEqual({
      min_nodes: 'Must be at least 0'
    });
    expect(validateScale(fields, { min_nodes: '0', max_nodes: '0' })).toEqual({
      max_nodes: 'Must be at least 1'
    });
    expect(validateScale(fields, { min_nodes: '0', max_nodes: '257' })).toEqual(
      { max_nodes: 'Must be at most 256' }
    );
    expect(validateScale(fields, { min_nodes: '', max_nodes: '2' })).toEqual({
      min_nodes: 'Min Nodes is required'
    });
    expect(validateScale(fields, { min_nodes: '3', max_nodes: '2' })).toEqual({
      max_nodes: 'Must be at least min nodes (3)'
    });
  });

  it('sends only what changed', () => {
    expect(scaleChanges(cluster(), { min_nodes: '1', max_nodes: '3' })).toEqual(
      { max_nodes: 3 }
    );
    expect(
      scaleChanges(cluster(), { min_nodes: ' 0 ', max_nodes: '2' })
    ).toEqual({ min_nodes: 0 });
    expect(scaleChanges(cluster(), { min_nodes: '1', max_nodes: '2' })).toEqual(
      {}
    );
  });

  it('shows workers as current / max', () => {
    expect(formatWorkers(cluster())).toBe('1/2 workers');
    expect(
      formatWorkers(cluster({ nodes: { current: 0, min: 0, max: 1 } }))
    ).toBe('0/1 worker');
    expect(formatWorkers(cluster({ nodes: null }))).toBe('');
    // An attached cluster has no max: its workers are counted as they are.
    expect(
      formatWorkers(cluster({ nodes: { current: 3, min: null, max: null } }))
    ).toBe('3 workers');
  });

  it('lists the dashboard among the applications', () => {
    const links = applicationLinks(
      cluster({
        properties: {
          min_nodes: 1,
          max_nodes: 2,
          dashboard_link: 'http://127.0.0.1:8787/status'
        }
      })
    );
    expect(links).toEqual([
      { label: 'Dashboard', url: 'http://127.0.0.1:8787/status' }
    ]);
    expect(
      applicationLinks(
        cluster({ properties: { dashboard_link: 'javascript:alert(1)' } })
      )
    ).toEqual([]);
  });

  it('opens a dashboard on the server machine through the server', () => {
    const props = {
      dashboard_link: 'http://127.0.0.1:8787/status',
      dashboard_path: 'proxy/8787/status'
    };
    expect(
      applicationLinks(
        cluster({ properties: props }),
        'https://hub.example.org/user/alice/'
      )
    ).toEqual([
      {
        label: 'Dashboard',
        url: 'https://hub.example.org/user/alice/proxy/8787/status',
        sameServer: true
      }
    ]);
    // Anything but a proxy path is ignored: the link stays the cluster's own.
    expect(
      applicationLinks(
        cluster({
          properties: { ...props, dashboard_path: '//evil.example/x' }
        }),
        'https://hub.example.org/user/alice/'
      )
    ).toEqual([{ label: 'Dashboard', url: 'http://127.0.0.1:8787/status' }]);
  });
});

describe('ssh attach', () => {
  const FP = 'SHA256:' + 'A'.repeat(43);

  it('reads the host-key question from the API error', async () => {
    const server = new FakeServer();
    server.on('POST', 'workspaces/local/targets', {
      status: 400,
      body: {
        message: 'the host key of [127.0.0.1]:2222 is not known',
        reason: 'unknown_host_key',
        field: '/accept_host_key',
        details: {
          host: '127.0.0.1',
          port: 2222,
          algorithm: 'ssh-ed25519',
          fingerprint: FP
        }
      }
    });
    const api = new ComputeApi({ serverSettings: server.settings });
    const error = await api
      .createTarget('local', { name: 'vm', kind: 'ssh', host: '127.0.0.1' })
      .catch(e => e);
    expect(error).toBeInstanceOf(ComputeApiError);
    expect(hostKeyChallenge(error)).toEqual({
      fingerprint: FP,
      algorithm: 'ssh-ed25519',
      host: '127.0.0.1',
      port: 2222,
      changed: false,
      message: 'the host key of [127.0.0.1]:2222 is not known'
    });
  });

  it('tells a changed key from an unknown one, and ignores other errors', () => {
    const changed = new ComputeApiError({
      message: 'CHANGED',
      status: 400,
      reason: 'host_key_changed',
      details: { fingerprint: FP, host: 'h', port: 22 }
    });
    expect(hostKeyChallenge(changed)?.changed).toBe(true);
    expect(
      hostKeyChallenge(
        new ComputeApiError({
          message: 'no',
          status: 502,
          reason: 'auth_failed'
        })
      )
    ).toBeNull();
    // Without a fingerprint there is nothing the user could accept.
    expect(
      hostKeyChallenge(
        new ComputeApiError({
          message: 'could not be verified',
          status: 400,
          reason: 'unknown_host_key'
        })
      )
    ).toBeNull();
    expect(hostKeyChallenge(new Error('x'))).toBeNull();
  });

  it('names the machine of an ssh row as user@host[:port]', () => {
    const row = (properties: Record<string, unknown>) =>
      target('vm', { kind: 'ssh', properties }) as unknown as ITarget;
    expect(sshAddress(row({ host: 'gpu', username: 'me', port: 22 }))).toBe(
      'me@gpu'
    );
    expect(
      sshAddress(row({ host: '127.0.0.1', username: 'root', port: 2222 }))
    ).toBe('root@127.0.0.1:2222');
    expect(sshAddress(row({ host: '::1', username: null, port: 22 }))).toBe(
      '[::1]'
    );
    expect(sshAddress(row({}))).toBe('');
  });

  it('knows a listed key file that would be refused', () => {
    const keys = [
      {
        path: '/home/me/.ssh/id_ed25519',
        name: 'id_ed25519',
        mode: '0600',
        readable_by_others: false,
        usable: true,
        problem: null
      },
      {
        path: '/home/me/.ssh/shared',
        name: 'shared',
        mode: '0644',
        readable_by_others: true,
        usable: false,
        problem: 'permissions 0644 for /home/me/.ssh/shared are too open'
      }
    ];
    expect(keyProblem(keys, '/home/me/.ssh/id_ed25519')).toBeNull();
    expect(keyProblem(keys, ' /home/me/.ssh/shared ')).toContain('too open');
    expect(keyProblem(keys, '/elsewhere/key')).toBeNull();
    expect(keyProblem(null, '/home/me/.ssh/shared')).toBeNull();
  });

  it('lists key files with GET /ssh-keys', async () => {
    const server = new FakeServer();
    server.on('GET', 'ssh-keys', {
      status: 200,
      body: { directory: '/home/me/.ssh', keys: [] }
    });
    const api = new ComputeApi({ serverSettings: server.settings });
    expect(await api.listSshKeys()).toEqual({
      directory: '/home/me/.ssh',
      keys: []
    });
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual([
      'GET ssh-keys'
    ]);
  });
});

describe('ComputeModel.updateTarget', () => {
  it('sends a PATCH of the changes and shows the answer at once', async () => {
    const server = new FakeServer();
    const before = cluster();
    const after = cluster({
      properties: { min_nodes: 1, max_nodes: 3 },
      nodes: { current: 1, min: 1, max: 3 }
    });
    server
      .on('GET', 'workspaces', {
        status: 200,
        body: {
          workspaces: [LOCAL_WORKSPACE]
        }
      })
      .on('GET', 'workspaces/local/kinds', {
        status: 200,
        body: { kinds: [...KINDS, DASK_CLUSTER] }
      })
      .on('GET', 'workspaces/local/targets', {
        status: 200,
        body: { targets: [before] }
      })
      .on('PATCH', 'workspaces/local/targets/dc', { status: 200, body: after });
    const model = new ComputeModel({
      api: new ComputeApi({ serverSettings: server.settings }),
      workspace: 'local'
    });
    await model.refresh();
    await settle();
    expect(model.targets.get('dc')?.properties.max_nodes).toBe(2);
    await model.updateTarget('dc', { max_nodes: 3 });
    const patch = server.requests.find(r => r.method === 'PATCH');
    expect(patch?.body).toEqual({ max_nodes: 3 });
    expect(model.targets.get('dc')?.properties.max_nodes).toBe(3);
    expect(formatWorkers(model.targets.get('dc')!)).toBe('1/3 workers');
    model.dispose();
  });

  it('rejects with the field the server names, and changes nothing', async () => {
    const server = new FakeServer();
    server.on('PATCH', 'workspaces/local/targets/dc', {
      status: 400,
      body: {
        message: 'min_nodes (3) may not exceed max_nodes (2)',
        reason: 'invalid_request',
        field: '/min_nodes'
      }
    });
    const model = new ComputeModel({
      api: new ComputeApi({ serverSettings: server.settings }),
      workspace: 'local'
    });
    const error: ComputeApiError = await model
      .updateTarget('dc', { min_nodes: 3 })
      .then(
        () => {
          throw new Error('the update was accepted');
        },
        e => e
      );
    expect(error.status).toBe(400);
    expect(error.field).toBe('/min_nodes');
    expect(model.targets.has('dc')).toBe(false);
    model.dispose();
  });
});

describe('an attach that ends before its 202 arrives', () => {
  it('is not shown as still running', async () => {
    const server = new FakeServer();
    const events = new Signal<object, IEventEmission>({});
    const operation = {
      id: 'op1',
      target: 'vm',
      workspace: 'local',
      action: 'attach',
      status: 'running',
      progress: '',
      error: null,
      started: '2025-01-01T00:00:00+00:00',
      ended: null
    };
    server
      .on('POST', 'workspaces/local/targets', () => {
        // The end of the operation is published before the answer that started it is read.
        events.emit({
          schema_id: OPERATION_EVENT,
          id: 'op1',
          workspace: 'local',
          target: 'vm',
          action: 'attach',
          status: 'succeeded'
        });
        return { status: 202, body: { operation } };
      })
      .on('GET', 'workspaces/local/targets/vm', {
        status: 200,
        body: target('vm', { kind: 'ssh', managed: false })
      });
    const model = new ComputeModel({
      api: new ComputeApi({ serverSettings: server.settings }),
      events,
      workspace: 'local'
    });
    await model.createTarget({ name: 'vm', kind: 'ssh' });
    await settle();
    expect(model.operation('vm')).toBeUndefined();
    expect(model.targets.get('vm')?.state).toBe('stopped');
    model.dispose();
  });
});
