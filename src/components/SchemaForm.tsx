/**
 * The fields of a form generated from a JSON Schema, each with its label, help and inline error.
 */
import * as React from 'react';

import type { ISize } from '../api';
import { FormErrors, FormValue, FormValues, IField } from '../schemaForm';

export interface ISchemaFieldsProps {
  /** Prefix of the element ids, unique on the page. */
  idPrefix: string;
  fields: IField[];
  values: FormValues;
  errors: FormErrors;
  /** Sizes for a `size` field; null while unknown (a text field is shown). */
  sizes: ISize[] | null;
  disabled?: boolean;
  onChange: (name: string, value: FormValue) => void;
  onBlur: (name: string) => void;
  /** Controls of a kind's own for some fields, by field name; the label, help and error stay. */
  controls?: Record<string, (props: IControlProps) => JSX.Element>;
}

/** What a field's own control gets: its input's attributes and the field's value. */
export interface IControlProps {
  id: string;
  name: string;
  disabled?: boolean;
  'aria-invalid'?: boolean;
  'aria-describedby'?: string;
  'aria-required'?: boolean;
  onBlur: () => void;
  value: string;
  onChange: (value: string) => void;
}

/** The forms' one-line text input: styled as JupyterLab's, no spelling marks, no autofill. */
export function TextInput(
  props: React.InputHTMLAttributes<HTMLInputElement>
): JSX.Element {
  return (
    <input
      className="jp-mod-styled jp-ComputeForm-input"
      type="text"
      spellCheck={false}
      autoComplete="off"
      {...props}
    />
  );
}

export function SchemaFields(props: ISchemaFieldsProps): JSX.Element {
  return (
    <div className="jp-ComputeForm-fields">
      {props.fields.map(field => (
        <SchemaField key={field.name} {...props} field={field} />
      ))}
    </div>
  );
}

/** The id of a field's input element, so callers can focus it. */
export function fieldId(idPrefix: string, name: string): string {
  return `${idPrefix}-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

function SchemaField(
  props: ISchemaFieldsProps & { field: IField }
): JSX.Element {
  const { field, values, errors, idPrefix, disabled } = props;
  const id = fieldId(idPrefix, field.name);
  const error = errors[field.name];
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const describedBy =
    [field.description ? helpId : '', error ? errorId : '']
      .filter(Boolean)
      .join(' ') || undefined;
  const value = values[field.name];
  const text = typeof value === 'string' ? value : '';
  const common = {
    id,
    name: field.name,
    disabled,
    'aria-invalid': error ? true : undefined,
    'aria-describedby': describedBy,
    'aria-required': field.required || undefined,
    onBlur: () => props.onBlur(field.name)
  };
  const change = (
    event: React.ChangeEvent<
      HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement
    >
  ) => props.onChange(field.name, event.target.value);

  let control: JSX.Element;
  const custom = props.controls?.[field.name];
  switch (custom ? 'custom' : field.kind) {
    case 'custom':
      control = (custom as (props: IControlProps) => JSX.Element)({
        ...common,
        value: text,
        onChange: value => props.onChange(field.name, value)
      });
      break;
    case 'boolean':
      control = (
        <input
          {...common}
          type="checkbox"
          checked={value === true}
          onChange={event => props.onChange(field.name, event.target.checked)}
        />
      );
      break;
    case 'password':
      control = (
        <input
          {...common}
          className="jp-mod-styled jp-ComputeForm-input"
          type="password"
          autoComplete="new-password"
          spellCheck={false}
          value={text}
          onChange={change}
        />
      );
      break;
    case 'integer':
    case 'number':
      control = (
        <input
          {...common}
          className="jp-mod-styled jp-ComputeForm-input"
          type="text"
          inputMode={field.kind === 'integer' ? 'numeric' : 'decimal'}
          placeholder={field.example ? `e.g. ${field.example}` : ''}
          value={text}
          onChange={change}
        />
      );
      break;
    case 'choice':
      control = (
        <select
          {...common}
          className="jp-mod-styled jp-ComputeForm-input"
          value={text}
          onChange={change}
        >
          {!field.required || text === '' ? <option value="">—</option> : null}
          {field.choices.map(c => (
            <option key={String(c)} value={String(c)}>
              {String(c)}
            </option>
          ))}
        </select>
      );
      break;
    case 'size':
      control =
        props.sizes && props.sizes.length > 0 ? (
          <select
            {...common}
            className="jp-mod-styled jp-ComputeForm-input"
            value={text}
            onChange={change}
          >
            <option value="">
              {field.required ? 'Choose a size' : 'Default size'}
            </option>
            {props.sizes.map(size => (
              <option key={size.name} value={size.name}>
                {describeSize(size)}
              </option>
            ))}
          </select>
        ) : (
          <input
            {...common}
            className="jp-mod-styled jp-ComputeForm-input"
            type="text"
            value={text}
            onChange={change}
          />
        );
      break;
    case 'map':
    case 'list':
    case 'json':
      control = (
        <textarea
          {...common}
          className="jp-mod-styled jp-ComputeForm-input jp-ComputeForm-textarea"
          rows={3}
          spellCheck={false}
          placeholder={
            field.kind === 'map'
              ? `KEY=VALUE, one a line${field.example ? `; e.g. ${field.example}` : ''}`
              : field.kind === 'list'
                ? 'One value a line'
                : 'JSON'
          }
          value={text}
          onChange={change}
        />
      );
      break;
    default:
      control = (
        <TextInput
          {...common}
          placeholder={field.example ? `e.g. ${field.example}` : undefined}
          value={text}
          onChange={change}
        />
      );
  }

  return (
    <div
      className={`jp-ComputeForm-field${error ? ' jp-mod-invalid' : ''}${
        field.kind === 'boolean' ? ' jp-mod-checkbox' : ''
      }`}
      data-field={field.name}
    >
      <label htmlFor={id} className="jp-ComputeForm-label">
        {field.title}
        {field.required ? (
          <span className="jp-ComputeForm-required" aria-hidden="true">
            {' '}
            *
          </span>
        ) : null}
      </label>
      {control}
      {field.description ? (
        <div id={helpId} className="jp-ComputeForm-help">
          {field.description}
        </div>
      ) : null}
      <div
        id={errorId}
        className="jp-ComputeForm-error"
        role={error ? 'alert' : undefined}
        aria-live="polite"
      >
        {error ?? ''}
      </div>
    </div>
  );
}

/** "Standard_DS3_v2 — 4 vCPUs, 14 GB, 1 GPU · 24 cores left · $0.29/h" */
export function describeSize(size: ISize): string {
  const specs: string[] = [];
  if (size.vcpus !== null && size.vcpus !== undefined) {
    specs.push(`${size.vcpus} vCPU${size.vcpus === 1 ? '' : 's'}`);
  }
  if (size.memory_gb !== null && size.memory_gb !== undefined) {
    specs.push(`${size.memory_gb} GB`);
  }
  if (size.gpus) {
    specs.push(`${size.gpus} GPU${size.gpus === 1 ? '' : 's'}`);
  }
  const extra: string[] = [];
  if (size.quota_available !== null && size.quota_available !== undefined) {
    extra.push(`${size.quota_available} left in quota`);
  }
  if (size.price_per_hour !== null && size.price_per_hour !== undefined) {
    extra.push(`$${size.price_per_hour.toFixed(2)}/h`);
  }
  return [
    specs.length ? `${size.name} — ${specs.join(', ')}` : size.name,
    ...extra
  ].join(' · ');
}
