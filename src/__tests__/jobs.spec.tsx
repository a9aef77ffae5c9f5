import * as React from 'react';
import { act } from 'react';

import { ComputeApi, IJob } from '../api';
import { JobsSection, ScheduleTable } from '../components/DetailsView';
import { formatAgo, formatElapsed, formatLoad, formatWhen } from '../state';
import { ComputeModel } from '../model';
import { FakeServer, settle } from './fakeServer';
import { createRoot, IRoot } from './dom';

const RUNNING: IJob = {
  name: 'train-1',
  status: 'Running',
  compute: 'cpu',
  age_seconds: 7300,
  duration_seconds: 192,
  studio_url: 'https://ml.azure.com/runs/train-1'
};
const DONE: IJob = {
  name: 'train-0',
  status: 'Completed',
  compute: 'cpu',
  age_seconds: 90000,
  duration_seconds: 45
};

describe('time as people read it', () => {
  it('gives durations and ages in words', () => {
    expect(formatElapsed(45)).toBe('45s');
    expect(formatElapsed(192.4)).toBe('3m 12s');
    expect(formatElapsed(7500)).toBe('2h 05m');
    expect(formatElapsed(273600)).toBe('3d 4h');
    expect(formatElapsed(null)).toBe('—');
    expect(formatAgo(20)).toBe('just now');
    expect(formatAgo(300)).toBe('5 min ago');
    expect(formatAgo(7300)).toBe('2 h ago');
    expect(formatAgo(90000)).toBe('1 d ago');
  });
});

describe('moments and load', () => {
  it('says a moment relative to now, past or to come', () => {
    const now = Date.parse('2026-12-07T12:00:00Z');
    expect(formatWhen('2026-12-07T11:55:00Z', now)).toBe('5 min ago');
    expect(formatWhen('2026-12-07T11:59:50Z', now)).toBe('just now');
    expect(formatWhen('2026-12-07T12:12:00Z', now)).toBe('in 12 min');
    expect(formatWhen(null, now)).toBe('—');
  });

  it("gives this machine's load", () => {
    const t = {
      properties: { cpu_percent: 12.4, memory_available_gb: 10.37 }
    } as never;
    expect(formatLoad(t)).toBe('CPU 12% · 10.4 GB free');
    expect(formatLoad({ properties: {} } as never)).toBe('');
  });
});

describe('the jobs of a cluster', () => {
  let host: HTMLDivElement;
  let root: IRoot;
  let server: FakeServer;
  let model: ComputeModel;

  beforeEach(async () => {
    server = new FakeServer();
    server.on('GET', 'workspaces/ws/jobs', {
      status: 200,
      body: { jobs: [RUNNING, DONE] }
    });
    model = new ComputeModel({
      api: new ComputeApi({ serverSettings: server.settings }),
      workspace: 'ws'
    });
    host = document.createElement('div');
    document.body.appendChild(host);
    root = createRoot(host);
    await act(async () => {
      root.render(<JobsSection model={model} workspace="ws" target="cpu" />);
      await settle();
    });
  });

  afterEach(() => {
    act(() => root.unmount());
    host.remove();
    model.dispose();
  });

  const row = (job: string) =>
    host.querySelector<HTMLTableRowElement>(`tr[data-job='${job}']`)!;

  it('lists them with readable times, and a Cancel action on running ones only', () => {
    expect(server.requests[0].method).toBe('GET');
    expect(row('train-1').textContent).toContain('2 h ago');
    expect(row('train-1').textContent).toContain('3m 12s');
    expect(row('train-1').querySelector('a')!.href).toBe(
      'https://ml.azure.com/runs/train-1'
    );
    expect(row('train-1').querySelector('button')!.textContent).toBe('Cancel');
    expect(row('train-0').querySelector('button')).toBeNull();
  });

  it('cancels a job and shows what Azure did', async () => {
    server.on('POST', 'workspaces/ws/jobs/train-1/cancel', {
      status: 202,
      body: {
        ...RUNNING,
        status: 'CancelRequested',
        note: 'cancel requested; the job is CancelRequested'
      }
    });
    await act(async () => {
      row('train-1').querySelector('button')!.click();
      await settle();
    });
    expect(server.requests.map(r => [r.method, r.path])).toEqual([
      ['GET', 'workspaces/ws/jobs'],
      ['POST', 'workspaces/ws/jobs/train-1/cancel']
    ]);
    expect(row('train-1').textContent).toContain('CancelRequested');
    expect(host.querySelector('[role=status]')!.textContent).toBe(
      'train-1: cancel requested; the job is CancelRequested'
    );
  });

  it('says why when Azure refuses', async () => {
    server.on('POST', 'workspaces/ws/jobs/train-1/cancel', {
      status: 502,
      body: {
        message: 'The signed-in identity lacks a permission',
        reason: 'azure_auth'
      }
    });
    await act(async () => {
      row('train-1').querySelector('button')!.click();
      await settle();
    });
    expect(host.querySelector('[role=alert]')!.textContent).toContain(
      'lacks a permission'
    );
    expect(row('train-1').querySelector('button')!.disabled).toBe(false);
  });
});

describe('schedules', () => {
  it('are a table of action, when, time zone and whether enabled', () => {
    const host = document.createElement('div');
    const root = createRoot(host);
    act(() =>
      root.render(
        <ScheduleTable
          schedules={[
            {
              action: 'stop',
              when: 'cron 0 18 * * 1-5',
              time_zone: 'Pacific Standard Time',
              enabled: true
            },
            {
              action: 'start',
              when: 'every week on Monday at 08:30',
              enabled: false
            }
          ]}
        />
      )
    );
    const cells = Array.from(host.querySelectorAll('tbody tr')).map(tr =>
      Array.from(tr.querySelectorAll('td')).map(td => td.textContent)
    );
    expect(cells).toEqual([
      ['stop', 'cron 0 18 * * 1-5', 'Pacific Standard Time', 'yes'],
      ['start', 'every week on Monday at 08:30', 'UTC', 'no']
    ]);
    act(() => root.unmount());
  });
});
