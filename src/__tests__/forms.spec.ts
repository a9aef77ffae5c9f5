import type { JSONSchema7 } from 'json-schema';

import { ITarget } from '../api';
import { LOCAL, parseRouteAnswer, routeCode } from '../route';
import {
  errorsOf,
  fieldForPointer,
  fieldsFromSchema,
  humanLabel,
  initialValues,
  toRequestBody,
  validateField,
  validateForm
} from '../schemaForm';
import {
  badgeTone,
  canRun,
  formatIdleShutdown,
  formatNodes,
  formatSize
} from '../state';
import { KINDS, target } from './fakeServer';

/** The create schema of `local-kernel` as pydantic writes it. */
const LOCAL_KERNEL: JSONSchema7 = {
  additionalProperties: false,
  type: 'object',
  required: ['name'],
  properties: {
    description: {
      anyOf: [{ maxLength: 1024, type: 'string' }, { type: 'null' }],
      default: null,
      title: 'Description'
    },
    tags: {
      additionalProperties: { type: 'string' },
      title: 'Tags',
      type: 'object'
    },
    python: {
      anyOf: [{ maxLength: 4096, type: 'string' }, { type: 'null' }],
      default: null,
      title: 'Python'
    },
    env: {
      additionalProperties: { type: 'string' },
      title: 'Env',
      type: 'object'
    },
    memory_limit_mb: {
      anyOf: [
        { maximum: 4194304, minimum: 64, type: 'integer' },
        { type: 'null' }
      ],
      default: null,
      title: 'Memory Limit Mb'
    },
    token: {
      anyOf: [{ type: 'string' }, { type: 'null' }],
      default: null,
      writeOnly: true,
      format: 'password'
    },
    priority: { $ref: '#/$defs/Priority', default: 'dedicated' },
    name: { type: 'string', title: 'Name' }
  },
  $defs: { Priority: { enum: ['dedicated', 'low-priority'], type: 'string' } }
} as JSONSchema7;

describe('fieldsFromSchema', () => {
  const fields = fieldsFromSchema(LOCAL_KERNEL);
  const byName = Object.fromEntries(fields.map(f => [f.name, f]));

  it('puts name first and the common fields last', () => {
    expect(fields.map(f => f.name)).toEqual([
      'name',
      'python',
      'env',
      'memory_limit_mb',
      'token',
      'priority',
      'description',
      'tags'
    ]);
  });

  it('reads pydantic optional fields, maps, enums and secrets', () => {
    expect(byName.name.required).toBe(true);
    expect(byName.memory_limit_mb).toMatchObject({
      kind: 'integer',
      minimum: 64,
      maximum: 4194304,
      required: false
    });
    expect(byName.env.kind).toBe('map');
    expect(byName.description).toMatchObject({ kind: 'text', maxLength: 1024 });
    expect(byName.token).toMatchObject({
      kind: 'password',
      secret: true,
      default: ''
    });
    expect(byName.priority).toMatchObject({
      kind: 'choice',
      choices: ['dedicated', 'low-priority'],
      default: 'dedicated'
    });
  });

  it('gives a name field to a kind without schema', () => {
    expect(fieldsFromSchema(null).map(f => f.name)).toEqual(['name']);
  });
});

describe('validation', () => {
  const fields = fieldsFromSchema(LOCAL_KERNEL);
  const field = (name: string) => fields.find(f => f.name === name)!;

  it('checks names as the server does, before anything is sent', () => {
    expect(validateField(field('name'), '')).toMatch(/required/);
    expect(validateField(field('name'), 'bad name!')).toMatch(
      /Start with a letter/
    );
    expect(validateField(field('name'), '1abc')).toMatch(/Start with a letter/);
    expect(validateField(field('name'), 'local')).toMatch(/reserved/);
    expect(validateField(field('name'), 'Local')).toMatch(/reserved/);
    expect(
      validateField(field('name'), 'k1', { takenNames: new Set(['k1']) })
    ).toMatch(/already exists/);
    expect(validateField(field('name'), 'good-name_1')).toBeNull();
  });

  it('checks ranges, whole numbers and KEY=VALUE lines', () => {
    expect(validateField(field('memory_limit_mb'), '10')).toBe(
      'Must be at least 64'
    );
    expect(validateField(field('memory_limit_mb'), '99999999')).toBe(
      'Must be at most 4194304'
    );
    expect(validateField(field('memory_limit_mb'), '100.5')).toBe(
      'Enter a whole number'
    );
    expect(validateField(field('memory_limit_mb'), 'lots')).toBe(
      'Enter a number'
    );
    expect(validateField(field('memory_limit_mb'), '')).toBeNull();
    expect(validateField(field('env'), 'A=1\nnot a pair')).toMatch(/KEY=VALUE/);
    expect(validateField(field('env'), 'A=1\n\nB=x=y')).toBeNull();
  });

  it('validates the whole form', () => {
    const values = {
      ...initialValues(fields),
      name: 'local',
      memory_limit_mb: '1'
    };
    expect(Object.keys(validateForm(fields, values))).toEqual([
      'name',
      'memory_limit_mb'
    ]);
  });
});

describe('plain words', () => {
  it('labels fields as people write them, units in brackets', () => {
    expect(humanLabel('memory_limit_mb')).toBe('Memory limit (MB)');
    expect(humanLabel('idle_shutdown_minutes')).toBe('Idle shutdown (minutes)');
    expect(humanLabel('ssh_private_key')).toBe('SSH private key');
    expect(humanLabel('cwd')).toBe('Working directory');
    expect(humanLabel('env')).toBe('Environment variables');
    expect(humanLabel('tls_ca_file')).toBe('TLS CA file');
    expect(humanLabel('python')).toBe('Python');
  });

  it('gives an example to show, not a range', () => {
    const fields = fieldsFromSchema({
      type: 'object',
      properties: {
        memory_limit_mb: {
          anyOf: [
            { type: 'integer', minimum: 64, maximum: 4194304 },
            { type: 'null' }
          ],
          examples: [8192]
        },
        env: {
          type: 'object',
          additionalProperties: { type: 'string' },
          examples: [{ OMP_NUM_THREADS: '2' }]
        },
        cwd: { anyOf: [{ type: 'string' }, { type: 'null' }] }
      }
    } as JSONSchema7);
    const by = Object.fromEntries(fields.map(f => [f.name, f]));
    expect(by.memory_limit_mb.example).toBe('8192');
    expect(by.env.example).toBe('OMP_NUM_THREADS=2');
    expect(by.cwd.example).toBeUndefined();
    expect(by.memory_limit_mb.title).toBe('Memory limit (MB)');
  });

  it('checks min against max as the fields are typed, as Scale does', () => {
    const fields = fieldsFromSchema({
      type: 'object',
      properties: {
        min_nodes: { type: 'integer', minimum: 0, title: 'Minimum workers' },
        max_nodes: { type: 'integer', minimum: 1, title: 'Maximum workers' }
      }
    } as JSONSchema7);
    // Typing a minimum above the maximum names the maximum's error at once.
    expect(
      errorsOf(fields, { name: 'c', min_nodes: '5', max_nodes: '2' }, [
        'min_nodes',
        'max_nodes'
      ])
    ).toEqual({
      min_nodes: null,
      max_nodes: 'Must be at least minimum workers (5)'
    });
    expect(
      validateForm(fields, { name: 'c', min_nodes: '5', max_nodes: '2' })
    ).toEqual({
      max_nodes: 'Must be at least minimum workers (5)'
    });
    expect(
      validateForm(fields, { name: 'c', min_nodes: '2', max_nodes: '2' })
    ).toEqual({});
  });
});

describe('toRequestBody', () => {
  it('leaves empty optional fields out and parses the rest', () => {
    const fields = fieldsFromSchema(LOCAL_KERNEL);
    const values = {
      ...initialValues(fields),
      name: ' k1 ',
      memory_limit_mb: '512',
      env: 'A=1\nB = two',
      token: ' s3cret '
    };
    expect(toRequestBody(fields, values)).toEqual({
      name: 'k1',
      memory_limit_mb: 512,
      env: { A: '1', B: ' two' },
      token: ' s3cret ',
      priority: 'dedicated'
    });
  });
});

describe('fieldForPointer', () => {
  it("finds the form field a server error's JSON pointer names", () => {
    const fields = fieldsFromSchema(LOCAL_KERNEL);
    expect(fieldForPointer(fields, '/name')).toBe('name');
    expect(fieldForPointer(fields, '/env/A')).toBe('env');
    expect(fieldForPointer(fields, '/kind')).toBeNull();
    expect(fieldForPointer(fields, null)).toBeNull();
  });
});

describe('state rules', () => {
  const kernel = KINDS[1] as never;
  const machine = KINDS[0] as never;
  const t = (extra: Record<string, unknown>) =>
    target('k', extra) as unknown as ITarget;

  it('colours badges as Azure ML Studio does', () => {
    expect(badgeTone('running')).toBe('running');
    expect(badgeTone('failed')).toBe('failed');
    expect(badgeTone('stopped')).toBe('stopped');
    expect(badgeTone('unknown')).toBe('stopped');
    for (const s of [
      'creating',
      'starting',
      'stopping',
      'restarting',
      'deleting'
    ] as const) {
      expect(badgeTone(s)).toBe('transitional');
    }
  });

  it('enables actions by state and by what the kind offers', () => {
    expect(canRun(t({ state: 'stopped' }), kernel, 'start')).toBe(true);
    expect(canRun(t({ state: 'running' }), kernel, 'start')).toBe(false);
    expect(canRun(t({ state: 'running' }), kernel, 'stop')).toBe(true);
    expect(canRun(t({ state: 'starting' }), kernel, 'stop')).toBe(false);
    expect(canRun(t({ state: 'starting' }), kernel, 'delete')).toBe(false);
    expect(canRun(t({ state: 'stopped' }), kernel, 'restart')).toBe(false);
    expect(
      canRun(t({ state: 'running', kind: 'local' }), machine, 'stop')
    ).toBe(false);
    expect(
      canRun(t({ state: 'running', kind: 'local' }), machine, 'delete')
    ).toBe(false);
  });

  it('formats size, nodes and the idle shutdown countdown', () => {
    expect(
      formatSize(t({ size: { name: 'x', vcpus: 4, memory_gb: 15.6, gpus: 1 } }))
    ).toBe('4 vCPUs · 15.6 GB · 1 GPU');
    expect(formatNodes(t({ nodes: { current: 2, max: 4 } }))).toBe('2/4 nodes');
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(
      formatIdleShutdown(t({ idle_shutdown_at: '2025-01-01T00:12:30Z' }), now)
    ).toBe('idle stop in 13 min');
    expect(
      formatIdleShutdown(t({ idle_shutdown_at: '2025-01-01T02:05:00Z' }), now)
    ).toBe('idle stop in 2 h 5 min');
    expect(
      formatIdleShutdown(t({ idle_shutdown_at: '2025-01-01T00:00:40Z' }), now)
    ).toBe('idle stop in 40 s');
    expect(
      formatIdleShutdown(t({ idle_shutdown_at: '2024-12-31T23:59:00Z' }), now)
    ).toBe('idle stop due');
    expect(formatIdleShutdown(t({}), now)).toBe('');
  });
});

describe('routeCode', () => {
  it('routes with %compute use, naming the workspace unless it is local', () => {
    expect(routeCode('k1', 'local')).toBe(
      '%compute use k1 --routed-by toolbar'
    );
    expect(routeCode('ci-1', 'ml-ws')).toBe(
      '%compute use ci-1 --workspace ml-ws --routed-by toolbar'
    );
    expect(routeCode(LOCAL, 'ml-ws')).toBe('%compute use local');
  });

  it('refuses names from notebook metadata that are not plain names', () => {
    expect(() => routeCode('k1\nimport os', 'local')).toThrow(
      /not a valid target name/
    );
    expect(() => routeCode('k1; rm', 'local')).toThrow();
    expect(() => routeCode('k1', 'ws --x')).toThrow(/workspace/);
  });
});

describe('parseRouteAnswer', () => {
  it("reads the kernel's route from a user expression's answer", () => {
    expect(
      parseRouteAnswer({ status: 'ok', data: { 'text/plain': "'nb-target'" } })
    ).toBe('nb-target');
    expect(
      parseRouteAnswer({ status: 'ok', data: { 'text/plain': "'local'" } })
    ).toBe('local');
    expect(parseRouteAnswer({ status: 'error', ename: 'KeyError' })).toBeNull();
    expect(
      parseRouteAnswer({ status: 'ok', data: { 'text/plain': "'a\\nb'" } })
    ).toBeNull();
    expect(parseRouteAnswer(undefined)).toBeNull();
  });
});
