import { act } from 'react';

import { showModal } from '../components/Modal';

import * as React from 'react';

function escape(target: EventTarget): void {
  target.dispatchEvent(
    new KeyboardEvent('keydown', { key: 'Escape', bubbles: true })
  );
}

/** The dialog's content, once Lumino has rendered it (on a later frame). */
async function rendered(): Promise<HTMLElement> {
  for (let i = 0; i < 100; i++) {
    const node = document.querySelector<HTMLElement>(
      '.jp-ComputeModal [role="dialog"] button, .jp-ComputeModal [role="dialog"] input'
    );
    if (node && document.activeElement !== document.body) {
      return node;
    }
    await act(async () => {
      await new Promise(resolve => setTimeout(resolve, 10));
    });
  }
  throw new Error('the dialog was not rendered');
}

describe('showModal', () => {
  afterEach(() => {
    document.body.innerHTML = '';
  });

  it('closes on Escape from inside, and from the body when focus left it', async () => {
    let closed = showModal<string>({
      title: 'First',
      body: () => <input aria-label="field" />
    });
    await rendered();
    const inside = document.activeElement as HTMLElement;
    expect(inside.closest('[role="dialog"]')).not.toBeNull();
    await act(async () => escape(inside));
    await expect(closed).resolves.toBeNull();
    expect(document.querySelector('.jp-ComputeModal')).toBeNull();

    // The control that had focus is gone (a form re-rendered it): Escape reaches only the body.
    closed = showModal<string>({
      title: 'Second',
      body: () => <button type="button">Add</button>
    });
    await rendered();
    (document.activeElement as HTMLElement).blur();
    expect(document.activeElement).toBe(document.body);
    await act(async () => escape(document.body));
    await expect(closed).resolves.toBeNull();
    expect(document.querySelector('.jp-ComputeModal')).toBeNull();
  });

  it('leaves Escape alone while focus is on a menu over it', async () => {
    const menu = document.createElement('div');
    menu.className = 'lm-Menu';
    const outside = document.createElement('input');
    menu.appendChild(outside);
    document.body.appendChild(menu);
    let result: string | null | undefined = undefined;
    void showModal<string>({
      title: 'Open',
      body: close => (
        <button type="button" onClick={() => close('done')}>
          Done
        </button>
      )
    }).then(value => {
      result = value;
    });
    await rendered();
    outside.focus();
    expect(document.activeElement).toBe(outside);
    await act(async () => escape(outside));
    expect(document.querySelector('.jp-ComputeModal')).not.toBeNull();
    expect(result).toBeUndefined();
    await act(async () =>
      document
        .querySelector<HTMLButtonElement>(
          '.jp-ComputeModal button:not(.jp-ComputeModal-close)'
        )!
        .click()
    );
    expect(result).toBe('done');
  });

  it('keeps focus: what moves it to the page brings it back to where it was inside', async () => {
    const page = document.createElement('div');
    page.tabIndex = -1;
    document.body.appendChild(page);
    const other = document.createElement('div');
    other.className = 'jp-Dialog';
    const otherButton = document.createElement('button');
    other.appendChild(otherButton);
    document.body.appendChild(other);
    void showModal<string>({
      title: 'Keeps focus',
      body: () => (
        <div>
          <input aria-label="first" />
          <div className="step" tabIndex={-1} />
        </div>
      )
    });
    await rendered();
    const step = document.querySelector<HTMLElement>('.jp-ComputeModal .step')!;
    step.focus();
    expect(document.activeElement).toBe(step);

    // A widget of the page takes focus (as JupyterLab's Launcher does once its layout is restored).
    page.focus();
    expect(document.activeElement).toBe(step);

    // Another dialog, opened over this one, keeps the focus it takes.
    otherButton.focus();
    expect(document.activeElement).toBe(otherButton);
  });
});
