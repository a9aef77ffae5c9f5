import * as React from 'react';
import { act } from 'react';

import { ComputeApi, IKind, ITarget } from '../api';
import { ScaleControl } from '../components/ScaleControl';
import { ComputeModel } from '../model';
import { FakeServer, settle, target } from './fakeServer';
import { createRoot, IRoot } from './dom';

const KIND: IKind = {
  name: 'dask-cluster',
  family: 'Clusters',
  description: '',
  managed: true,
  operations: ['create', 'update', 'start', 'stop', 'delete', 'nodes'],
  update_fields: ['max_nodes', 'min_nodes'],
  create_schema: {
    type: 'object',
    properties: {
      min_nodes: { type: 'integer', minimum: 0, maximum: 256, default: 0 },
      max_nodes: { type: 'integer', minimum: 1, maximum: 256, default: 4 }
    }
  }
};

const CLUSTER = target('dc', {
  kind: 'dask-cluster',
  state: 'running',
  nodes: { current: 1, min: 1, max: 2 },
  properties: { min_nodes: 1, max_nodes: 2 }
}) as unknown as ITarget;

/** Type into a controlled input as a user does. */
function type(input: HTMLInputElement, value: string): void {
  const setter = Object.getOwnPropertyDescriptor(
    HTMLInputElement.prototype,
    'value'
  )!.set!;
  setter.call(input, value);
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

describe('ScaleControl', () => {
  let host: HTMLDivElement;
  let root: IRoot;
  let server: FakeServer;
  let model: ComputeModel;

  beforeEach(() => {
    server = new FakeServer();
    model = new ComputeModel({
      api: new ComputeApi({ serverSettings: server.settings }),
      workspace: 'local'
    });
    host = document.createElement('div');
    document.body.appendChild(host);
    root = createRoot(host);
    act(() => {
      root.render(<ScaleControl model={model} target={CLUSTER} kind={KIND} />);
    });
  });

  afterEach(() => {
    act(() => root.unmount());
    host.remove();
    model.dispose();
  });

  const input = (field: string) =>
    host.querySelector<HTMLInputElement>(`[data-field='${field}'] input`)!;
  const error = (field: string) =>
    host.querySelector(`[data-field='${field}'] .jp-ComputeForm-error`)!;
  const button = () => host.querySelector<HTMLButtonElement>('button')!;
  const submit = async () => {
    await act(async () => {
      host
        .querySelector('form')!
        .dispatchEvent(
          new Event('submit', { bubbles: true, cancelable: true })
        );
      await settle();
    });
  };

  it('starts from the spec and sends nothing until something changed', async () => {
    expect(input('min_nodes').value).toBe('1');
    expect(input('max_nodes').value).toBe('2');
    expect(button().disabled).toBe(true);
    await submit();
    expect(server.requests).toEqual([]);
  });

  it('shows what is wrong inline and sends nothing', async () => {
    act(() => type(input('max_nodes'), '0'));
    expect(error('max_nodes').textContent).toBe('Must be at least 1');
    expect(input('max_nodes').getAttribute('aria-invalid')).toBe('true');
    expect(button().disabled).toBe(true);
    act(() => type(input('max_nodes'), '2'));
    act(() => type(input('min_nodes'), '5'));
    expect(error('max_nodes').textContent).toBe(
      'Must be at least min nodes (5)'
    );
    await submit();
    expect(server.requests).toEqual([]);
  });

  it('shows the server refusal beside the field it names', async () => {
    server.on('PATCH', 'workspaces/local/targets/dc', {
      status: 400,
      body: {
        message: 'max_nodes: more than this machine can hold',
        reason: 'invalid_request',
        field: '/max_nodes'
      }
    });
    act(() => type(input('max_nodes'), '3'));
    expect(button().disabled).toBe(false);
    await submit();
    expect(server.requests.map(r => [r.method, r.body])).toEqual([
      ['PATCH', { max_nodes: 3 }]
    ]);
    expect(error('max_nodes').textContent).toBe(
      'max_nodes: more than this machine can hold'
    );
    expect(error('max_nodes').getAttribute('role')).toBe('alert');
    // Editing again clears it.
    act(() => type(input('max_nodes'), '4'));
    expect(error('max_nodes').textContent).toBe('');
  });

  it('shows an error that names no field below the control', async () => {
    server.on('PATCH', 'workspaces/local/targets/dc', {
      status: 503,
      body: { message: 'the store is busy', reason: 'unavailable' }
    });
    act(() => type(input('max_nodes'), '3'));
    await submit();
    expect(host.querySelector('.jp-ComputeForm-formError')!.textContent).toBe(
      'the store is busy'
    );
    expect(input('max_nodes').value).toBe('3');
  });

  it('applies an accepted change', async () => {
    server.on('PATCH', 'workspaces/local/targets/dc', {
      status: 200,
      body: {
        ...CLUSTER,
        properties: { min_nodes: 1, max_nodes: 3 },
        nodes: { current: 1, min: 1, max: 3 }
      }
    });
    act(() => type(input('max_nodes'), '3'));
    await submit();
    expect(model.targets.get('dc')?.properties.max_nodes).toBe(3);
    expect(host.querySelector('[role=status]')!.textContent).toBe(
      'Scaling between 1 and 3 nodes'
    );
  });
});
