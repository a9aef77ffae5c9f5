/**
 * Scaling a cluster while it runs: min and max nodes, checked against the kind's schema as
 * they are typed, sent as one update, and the server's refusal shown beside the control.
 * Also how a cluster's nodes read in the sidebar: its workers, current / max.
 */
import * as React from 'react';

import type { IKind, ITarget } from '../api';
import type { ComputeModel } from '../model';
import { ComputeApiError, messageOf } from '../request';
import {
  FormErrors,
  FormValues,
  IField,
  fieldForPointer,
  fieldsFromSchema,
  pairError,
  validateField
} from '../schemaForm';
import { useSignalVersion } from './common';
import { showModal } from './Modal';

export const SCALE_FIELDS = ['min_nodes', 'max_nodes'] as const;

/** The scale fields of a kind that can change them while its targets run; empty otherwise. */
export function scaleFields(kind: IKind | undefined): IField[] {
  if (
    !kind ||
    !kind.operations.includes('update') ||
    !SCALE_FIELDS.every(f => kind.update_fields?.includes(f))
  ) {
    return [];
  }
  const fields = fieldsFromSchema(kind.create_schema, false);
  const found = SCALE_FIELDS.map(name => fields.find(f => f.name === name));
  return found.every(Boolean) ? (found as IField[]) : [];
}

/** The values the control starts from: the target's current spec. */
export function scaleValues(target: ITarget): FormValues {
  const values: FormValues = {};
  for (const name of SCALE_FIELDS) {
    const v =
      target.properties?.[name] ??
      target.nodes?.[name === 'min_nodes' ? 'min' : 'max'];
    values[name] = typeof v === 'number' ? String(v) : '';
  }
  return values;
}

/**
 * The errors of the control's values: each field against the kind's schema (a whole number,
 * within its limits), then min against max, as the server checks them.
 */
export function validateScale(
  fields: IField[],
  values: FormValues
): FormErrors {
  const errors: FormErrors = {};
  for (const field of fields) {
    const error = validateField(
      { ...field, required: true },
      values[field.name]
    );
    if (error) {
      errors[field.name] = error;
    }
  }
  if (!errors.min_nodes && !errors.max_nodes) {
    const error = pairError(fields, values, 'max_nodes');
    if (error) {
      errors.max_nodes = error;
    }
  }
  return errors;
}

/** The fields that differ from the target's spec, as numbers; empty when nothing changed. */
export function scaleChanges(
  target: ITarget,
  values: FormValues
): Record<string, number> {
  const current = scaleValues(target);
  const changes: Record<string, number> = {};
  for (const name of SCALE_FIELDS) {
    const text = String(values[name] ?? '').trim();
    if (text !== '' && Number(text) !== Number(current[name])) {
      changes[name] = Number(text);
    }
  }
  return changes;
}

/** "1/2 workers": a cluster's nodes are its workers. */
export function formatWorkers(target: ITarget): string {
  const nodes = target.nodes;
  if (!nodes || nodes.current === null || nodes.current === undefined) {
    return '';
  }
  const max = nodes.max ?? null;
  const noun = (max ?? nodes.current) === 1 ? 'worker' : 'workers';
  return max !== null
    ? `${nodes.current}/${max} ${noun}`
    : `${nodes.current} ${noun}`;
}

let controlCounter = 0;

/** Min and max nodes of a running cluster, with inline checks and the server's answer. */
export function ScaleControl(props: {
  model: ComputeModel;
  target: ITarget;
  kind: IKind | undefined;
  /** Called once the server accepted a change. */
  onApplied?: (target: ITarget) => void;
}): JSX.Element | null {
  const { model, target } = props;
  const fields = React.useMemo(() => scaleFields(props.kind), [props.kind]);
  const current = scaleValues(target);
  const [values, setValues] = React.useState<FormValues>(current);
  const [dirty, setDirty] = React.useState(false);
  const [serverError, setServerError] = React.useState<{
    field: string | null;
    message: string;
  } | null>(null);
  const [busy, setBusy] = React.useState(false);
  const [status, setStatus] = React.useState('');
  const idPrefix = React.useMemo(
    () => `jp-ComputeScale-${++controlCounter}`,
    []
  );

  // Follow changes made elsewhere until the user starts editing.
  const currentKey = `${current.min_nodes}/${current.max_nodes}`;
  React.useEffect(() => {
    if (!dirty) {
      setValues(scaleValues(target));
    }
  }, [currentKey, dirty]);

  if (fields.length === 0) {
    return null;
  }
  const errors = dirty ? validateScale(fields, values) : {};
  const changes = scaleChanges(target, values);
  const unchanged = Object.keys(changes).length === 0;

  const onChange = (name: string, value: string) => {
    setValues({ ...values, [name]: value });
    setDirty(true);
    setServerError(null);
    setStatus('');
  };

  const apply = async (event: React.FormEvent) => {
    event.preventDefault();
    if (busy) {
      return;
    }
    const found = validateScale(fields, values);
    setDirty(true);
    if (Object.keys(found).length || unchanged) {
      return;
    }
    setBusy(true);
    setServerError(null);
    setStatus('');
    try {
      const updated = await model.updateTarget(target.name, changes);
      setDirty(false);
      setValues(scaleValues(updated));
      setStatus(
        `Scaling between ${updated.properties?.min_nodes} and ${updated.properties?.max_nodes} nodes`
      );
      props.onApplied?.(updated);
    } catch (error) {
      const field =
        error instanceof ComputeApiError
          ? fieldForPointer(fields, error.field)
          : null;
      setServerError({ field, message: messageOf(error) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <form
      className="jp-ComputeScale"
      onSubmit={apply}
      noValidate
      aria-busy={busy}
      aria-label={`Scale ${target.name}`}
    >
      <div className="jp-ComputeScale-fields">
        {fields.map(field => {
          const id = `${idPrefix}-${field.name}`;
          const error =
            errors[field.name] ??
            (serverError?.field === field.name ? serverError.message : '');
          return (
            <div
              key={field.name}
              className={`jp-ComputeScale-field${error ? ' jp-mod-invalid' : ''}`}
              data-field={field.name}
            >
              <label htmlFor={id} className="jp-ComputeForm-label">
                {field.name === 'min_nodes' ? 'Min nodes' : 'Max nodes'}
              </label>
              <input
                id={id}
                name={field.name}
                className="jp-mod-styled jp-ComputeForm-input"
                type="text"
                inputMode="numeric"
                placeholder={`${field.minimum ?? 0}–${field.maximum ?? ''}`}
                title={field.description}
                value={String(values[field.name] ?? '')}
                disabled={busy}
                aria-invalid={error ? true : undefined}
                aria-describedby={`${id}-error`}
                onChange={event => onChange(field.name, event.target.value)}
              />
              <div
                id={`${id}-error`}
                className="jp-ComputeForm-error"
                role={error ? 'alert' : undefined}
                aria-live="polite"
              >
                {error}
              </div>
            </div>
          );
        })}
        <button
          type="submit"
          className="jp-Button jp-mod-styled jp-mod-accept jp-ComputeScale-apply"
          disabled={busy || unchanged || Object.keys(errors).length > 0}
        >
          {busy ? 'Scaling…' : 'Scale'}
        </button>
      </div>
      <div className="jp-ComputeForm-formError" role="alert">
        {serverError && !serverError.field ? serverError.message : ''}
      </div>
      <div className="jp-ComputeScale-status" role="status">
        {status}
      </div>
    </form>
  );
}

/** The scale control in a dialog, opened from a cluster's row; its × (or Escape) closes it. */
export function showScaleDialog(
  model: ComputeModel,
  name: string
): Promise<boolean | null> {
  return showModal<boolean>({
    title: `Scale '${name}'`,
    className: 'jp-ComputeScaleDialog',
    body: close => <ScaleDialogBody model={model} name={name} close={close} />
  });
}

function ScaleDialogBody(props: {
  model: ComputeModel;
  name: string;
  close: (value: boolean | null) => void;
}): JSX.Element {
  const { model, name } = props;
  useSignalVersion(model.changed);
  const target = model.targets.get(name);
  return (
    <div className="jp-Dialog-body">
      {target ? (
        <>
          <p className="jp-ComputeScale-now">
            {formatWorkers(target) || 'No workers yet'} now. Workers come and go
            between min and max nodes as the load asks.
          </p>
          <ScaleControl
            model={model}
            target={target}
            kind={model.kindOf(target)}
            onApplied={() => props.close(true)}
          />
        </>
      ) : (
        <p role="status">There is no target named '{name}' (any more).</p>
      )}
    </div>
  );
}
