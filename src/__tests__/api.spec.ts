import { ComputeApi } from '../api';
import { ComputeApiError } from '../request';
import { FakeServer, LOCAL_WORKSPACE, target } from './fakeServer';

describe('ComputeApi', () => {
  let server: FakeServer;
  let api: ComputeApi;

  beforeEach(() => {
    server = new FakeServer();
    api = new ComputeApi({ serverSettings: server.settings });
  });

  it('lists workspaces, kinds and targets from their envelopes', async () => {
    server
      .on('GET', 'workspaces', {
        status: 200,
        body: {
          workspaces: [LOCAL_WORKSPACE]
        }
      })
      .on('GET', 'workspaces/local/kinds', {
        status: 200,
        body: { kinds: [{ name: 'local-kernel' }] }
      })
      .on('GET', 'workspaces/local/targets', {
        status: 200,
        body: { targets: [target('a')] }
      });
    expect((await api.listWorkspaces()).workspaces[0].id).toBe('local');
    expect((await api.listKinds('local'))[0].name).toBe('local-kernel');
    expect((await api.listTargets('local'))[0].name).toBe('a');
  });

  it('sends the token and the JSON body of a create, and answers the operation', async () => {
    const operation = {
      id: 'op1',
      target: 'k1',
      workspace: 'local',
      action: 'create',
      status: 'running'
    };
    server.on('POST', 'workspaces/local/targets', {
      status: 202,
      body: { operation }
    });
    const op = await api.createTarget('local', {
      name: 'k1',
      kind: 'local-kernel',
      env: { A: '1' }
    });
    expect(op.id).toBe('op1');
    const request = server.requests[0];
    expect(request.method).toBe('POST');
    expect(request.body).toEqual({
      name: 'k1',
      kind: 'local-kernel',
      env: { A: '1' }
    });
    expect(request.headers.get('Authorization')).toBe('token secret-token');
    expect(request.headers.get('Content-Type')).toBe('application/json');
  });

  it('has one method per endpoint, each on its own path', async () => {
    const op = { operation: { id: 'x' } };
    server
      .on('GET', 'workspaces/ws/targets/t', { status: 200, body: target('t') })
      .on('PATCH', 'workspaces/ws/targets/t', {
        status: 200,
        body: target('t')
      })
      .on('DELETE', 'workspaces/ws/targets/t', { status: 202, body: op })
      .on('POST', 'workspaces/ws/targets/t/start', { status: 202, body: op })
      .on('POST', 'workspaces/ws/targets/t/stop', { status: 202, body: op })
      .on('POST', 'workspaces/ws/targets/t/restart', { status: 202, body: op })
      .on('GET', 'workspaces/ws/targets/t/nodes', {
        status: 200,
        body: { nodes: [{ id: 'n' }] }
      })
      .on('GET', 'workspaces/ws/sizes', {
        status: 200,
        body: { sizes: [{ name: 's' }] }
      })
      .on('GET', 'workspaces/ws/usage', {
        status: 200,
        body: { usage: [{ name: 'u' }] }
      })
      .on('GET', 'operations/x', { status: 200, body: { id: 'x' } })
      .on('GET', 'openapi.json', { status: 200, body: { openapi: '3.1.0' } });
    await api.getTarget('ws', 't');
    await api.updateTarget('ws', 't', { description: 'd' });
    expect((await api.deleteTarget('ws', 't')).id).toBe('x');
    expect((await api.startTarget('ws', 't')).id).toBe('x');
    expect((await api.stopTarget('ws', 't')).id).toBe('x');
    expect((await api.restartTarget('ws', 't')).id).toBe('x');
    expect((await api.listNodes('ws', 't'))[0].id).toBe('n');
    expect((await api.listSizes('ws'))[0].name).toBe('s');
    expect((await api.listUsage('ws'))[0].name).toBe('u');
    expect((await api.getOperation('x')).id).toBe('x');
    expect((await api.getOpenApi()).openapi).toBe('3.1.0');
    expect(server.requests.map(r => `${r.method} ${r.path}`)).toEqual([
      'GET workspaces/ws/targets/t',
      'PATCH workspaces/ws/targets/t',
      'DELETE workspaces/ws/targets/t',
      'POST workspaces/ws/targets/t/start',
      'POST workspaces/ws/targets/t/stop',
      'POST workspaces/ws/targets/t/restart',
      'GET workspaces/ws/targets/t/nodes',
      'GET workspaces/ws/sizes',
      'GET workspaces/ws/usage',
      'GET operations/x',
      'GET openapi.json'
    ]);
    expect(server.requests[1].body).toEqual({ description: 'd' });
  });

  it('adds and removes workspaces', async () => {
    server
      .on('POST', 'workspaces', {
        status: 201,
        body: {
          id: 'ml',
          kind: 'azureml',
          description: '',
          default: false,
          properties: {}
        }
      })
      .on('DELETE', 'workspaces/ml', () => ({ status: 204 }));
    const request = {
      subscription_id: '0000',
      resource_group: 'rg',
      workspace_name: 'ml'
    };
    expect((await api.addWorkspace(request)).id).toBe('ml');
    expect(server.requests[0].body).toEqual(request);
    await expect(api.removeWorkspace('ml')).resolves.toBeUndefined();
    expect(server.requests[1].method).toBe('DELETE');
  });

  it('escapes names in the path', async () => {
    server.on('GET', 'workspaces/ws/targets/a b/c', {
      status: 200,
      body: target('a b/c')
    });
    await api.getTarget('ws', 'a b/c');
    expect(server.requests[0].path).toBe('workspaces/ws/targets/a b/c');
  });

  it('throws a ComputeApiError carrying the message, reason, field and status', async () => {
    server.on('POST', 'workspaces/local/targets', {
      status: 400,
      body: {
        message: "name 'x y' must start with a letter",
        reason: 'invalid_request',
        field: '/name'
      }
    });
    const error = await api
      .createTarget('local', { name: 'x y', kind: 'local-kernel' })
      .catch(e => e);
    expect(error).toBeInstanceOf(ComputeApiError);
    expect(error.status).toBe(400);
    expect(error.reason).toBe('invalid_request');
    expect(error.field).toBe('/name');
    expect(error.message).toBe("name 'x y' must start with a letter");
    expect(error.isNetworkError).toBe(false);
  });

  it.each([404, 409, 502, 503])(
    'maps status %i to a typed error',
    async status => {
      server.on('POST', 'workspaces/local/targets/k/start', {
        status,
        body: { message: `m${status}`, reason: `r${status}`, field: null }
      });
      const error = await api.startTarget('local', 'k').catch(e => e);
      expect(error).toBeInstanceOf(ComputeApiError);
      expect(error.status).toBe(status);
      expect(error.message).toBe(`m${status}`);
      expect(error.reason).toBe(`r${status}`);
      expect(error.field).toBeNull();
    }
  );

  it('describes an error whose body is not JSON', async () => {
    server.on('GET', 'workspaces', () => ({ status: 500 }));
    const error = await api.listWorkspaces().catch(e => e);
    expect(error).toBeInstanceOf(ComputeApiError);
    expect(error.status).toBe(500);
    expect(error.reason).toBe('http_error');
    expect(error.message).toContain('GET workspaces failed: 500');
  });

  it('turns a failure to reach the server into a network error', async () => {
    server.failNetwork = true;
    const error = await api.listWorkspaces().catch(e => e);
    expect(error).toBeInstanceOf(ComputeApiError);
    expect(error.status).toBe(0);
    expect(error.isNetworkError).toBe(true);
    expect(error.reason).toBe('network_error');
  });
});
