/**
 * A modal dialog whose body decides when it closes, so a form can stay open to show the
 * server's answer next to the field it names. Styled as JupyterLab's own dialogs.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

let counter = 0;

export interface IModalOptions<T> {
  title: string;
  /** Extra class on the dialog content, for sizing. */
  className?: string;
  /** The dialog's body; it calls `close` with a value, or with null to cancel. */
  body: (close: (value: T | null) => void) => React.ReactElement;
}

/** Show a modal dialog; resolves with the value it was closed with, null when cancelled. */
export function showModal<T>(options: IModalOptions<T>): Promise<T | null> {
  return new Promise(resolve => {
    const previous = document.activeElement as HTMLElement | null;
    const titleId = `jp-ComputeModal-title-${++counter}`;
    let widget: Widget | null = null;
    const close = (value: T | null) => {
      if (!widget || widget.isDisposed) {
        return;
      }
      widget.dispose();
      widget = null;
      if (previous && document.contains(previous)) {
        previous.focus();
      }
      resolve(value);
    };
    widget = ReactWidget.create(
      <ModalFrame
        title={options.title}
        titleId={titleId}
        className={options.className}
        onCancel={() => close(null)}
      >
        {options.body(close)}
      </ModalFrame>
    );
    widget.addClass('jp-Dialog');
    widget.addClass('jp-ThemedContainer');
    widget.addClass('jp-ComputeModal');
    Widget.attach(widget, document.body);
  });
}

function ModalFrame(props: {
  title: string;
  titleId: string;
  className?: string;
  onCancel: () => void;
  children: React.ReactNode;
}): JSX.Element {
  const ref = React.useRef<HTMLDivElement>(null);

  React.useEffect(() => {
    const node = ref.current;
    if (!node) {
      return;
    }
    const first =
      node.querySelector<HTMLElement>('[data-autofocus]') ??
      node.querySelector<HTMLElement>(
        '.jp-Dialog-body input, .jp-Dialog-body select, .jp-Dialog-body textarea'
      ) ??
      node.querySelector<HTMLElement>(FOCUSABLE);
    first?.focus();
  }, []);

  // A modal keeps keyboard focus: focus moved outside it, and not to another dialog or a menu,
  // goes back to where it was inside. JupyterLab may activate a widget of its own while the dialog
  // is open (the Launcher it opens once its layout is restored, later on a busy machine), and
  // what the person then typed would go there.
  React.useEffect(() => {
    const node = ref.current;
    if (!node) {
      return;
    }
    let last: HTMLElement | null = null;
    const onFocusIn = (event: FocusEvent) => {
      const target = event.target;
      if (!(target instanceof HTMLElement)) {
        return;
      }
      if (node.contains(target)) {
        last = target;
        return;
      }
      const open = document.querySelectorAll('.jp-ComputeModal-content');
      if (
        open[open.length - 1] !== node ||
        target.closest('.jp-Dialog, .lm-Menu')
      ) {
        return;
      }
      const back =
        last && last.isConnected && node.contains(last)
          ? last
          : (node.querySelector<HTMLElement>('[data-autofocus]') ??
            node.querySelector<HTMLElement>(FOCUSABLE));
      back?.focus();
    };
    document.addEventListener('focusin', onFocusIn, true);
    return () => document.removeEventListener('focusin', onFocusIn, true);
  }, []);

  // Escape closes the dialog even when the control that had focus went away (a button disabled
  // or re-rendered while a form is checked): focus is then on the page's body, in no dialog.
  const cancel = React.useRef(props.onCancel);
  cancel.current = props.onCancel;
  React.useEffect(() => {
    const onDocumentKey = (event: KeyboardEvent) => {
      const active = document.activeElement;
      if (
        event.key !== 'Escape' ||
        event.defaultPrevented ||
        (active && active !== document.body)
      ) {
        return;
      }
      const open = document.querySelectorAll('.jp-ComputeModal-content');
      if (open[open.length - 1] === ref.current) {
        event.preventDefault();
        cancel.current();
      }
    };
    document.addEventListener('keydown', onDocumentKey);
    return () => document.removeEventListener('keydown', onDocumentKey);
  }, []);

  const onKeyDown = (event: React.KeyboardEvent) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      props.onCancel();
      return;
    }
    if (event.key !== 'Tab' || !ref.current) {
      return;
    }
    // Keep focus inside the dialog.
    const items = Array.from(
      ref.current.querySelectorAll<HTMLElement>(FOCUSABLE)
    ).filter(el => el.offsetParent !== null);
    if (items.length === 0) {
      return;
    }
    const first = items[0];
    const last = items[items.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  };

  return (
    <div
      ref={ref}
      className={`jp-Dialog-content jp-ComputeModal-content ${
        props.className ?? ''
      }`}
      role="dialog"
      aria-modal="true"
      aria-labelledby={props.titleId}
      onKeyDown={onKeyDown}
    >
      <div className="jp-Dialog-header jp-ComputeModal-header">
        <h2 id={props.titleId} className="jp-ComputeModal-title">
          {props.title}
        </h2>
        <button
          type="button"
          className="jp-ComputeModal-close jp-Button jp-mod-minimal"
          aria-label="Close"
          title="Close"
          onClick={props.onCancel}
        >
          ×
        </button>
      </div>
      {props.children}
    </div>
  );
}
