/**
 * The dialog that adds an Azure ML workspace to the switcher, with the same inline checks and
 * server errors beside their fields as the create dialog.
 */
import type { JSONSchema7 } from 'json-schema';
import * as React from 'react';

import type { IAddWorkspaceRequest } from '../api';
import type { ComputeModel } from '../model';
import { ComputeApiError } from '../request';
import {
  FormErrors,
  FormValue,
  FormValues,
  fieldForPointer,
  fieldsFromSchema,
  initialValues,
  toRequestBody,
  validateField,
  validateForm
} from '../schemaForm';
import { showModal } from './Modal';
import { SchemaFields, fieldId } from './SchemaForm';

const AZURE_WORKSPACE: JSONSchema7 = {
  type: 'object',
  required: ['subscription_id', 'resource_group', 'workspace_name'],
  properties: {
    subscription_id: {
      type: 'string',
      title: 'Subscription ID',
      description: 'The Azure subscription, a GUID.',
      pattern: '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'
    },
    resource_group: {
      type: 'string',
      title: 'Resource group',
      maxLength: 90
    },
    workspace_name: {
      type: 'string',
      title: 'Workspace name',
      maxLength: 33
    },
    alias: {
      type: 'string',
      title: 'Name here',
      description:
        'How the switcher shows it; by default, from the workspace name.'
    },
    location: {
      type: 'string',
      title: 'Region',
      description: 'Such as westeurope; found by itself when left empty.'
    }
  }
};

/** Resolves with the new workspace's id, or null when cancelled. */
export function showAddWorkspaceDialog(
  model: ComputeModel
): Promise<string | null> {
  return showModal<string>({
    title: 'Add an Azure ML workspace',
    className: 'jp-ComputeWorkspaceDialog',
    body: close => <AddWorkspaceForm model={model} close={close} />
  });
}

function AddWorkspaceForm(props: {
  model: ComputeModel;
  close: (id: string | null) => void;
}): JSX.Element {
  const fields = React.useMemo(
    () => fieldsFromSchema(AZURE_WORKSPACE, false),
    []
  );
  const [values, setValues] = React.useState<FormValues>(() =>
    initialValues(fields)
  );
  const [errors, setErrors] = React.useState<FormErrors>({});
  const [formError, setFormError] = React.useState('');
  const [busy, setBusy] = React.useState(false);
  const idPrefix = 'jp-ComputeWorkspaceForm';

  const check = (name: string, value: FormValue | undefined) => {
    const field = fields.find(f => f.name === name);
    const error = field ? validateField(field, value) : null;
    setErrors(prev => {
      const copy = { ...prev };
      if (error) {
        copy[name] = error;
      } else {
        delete copy[name];
      }
      return copy;
    });
  };

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    if (busy) {
      return;
    }
    const found = validateForm(fields, values);
    setErrors(found);
    const first = fields.find(f => found[f.name]);
    if (first) {
      document.getElementById(fieldId(idPrefix, first.name))?.focus();
      return;
    }
    setBusy(true);
    setFormError('');
    try {
      const added = await props.model.addWorkspace(
        toRequestBody(fields, values) as unknown as IAddWorkspaceRequest
      );
      props.close(added.id);
    } catch (error) {
      setBusy(false);
      const message =
        error instanceof ComputeApiError || error instanceof Error
          ? error.message
          : String(error);
      const field = fieldForPointer(
        fields,
        error instanceof ComputeApiError ? error.field : null
      );
      if (field) {
        setErrors(prev => ({ ...prev, [field]: message }));
        document.getElementById(fieldId(idPrefix, field))?.focus();
      } else {
        setFormError(message);
      }
    }
  };

  return (
    <form className="jp-ComputeForm-form" onSubmit={submit} noValidate>
      <div className="jp-Dialog-body jp-ComputeForm">
        <SchemaFields
          idPrefix={idPrefix}
          fields={fields}
          values={values}
          errors={errors}
          sizes={null}
          disabled={busy}
          onChange={(name, value) => {
            setValues(prev => ({ ...prev, [name]: value }));
            if (errors[name]) {
              check(name, value);
            }
          }}
          onBlur={name => check(name, values[name])}
        />
        <div className="jp-ComputeForm-formError" role="alert">
          {formError}
        </div>
      </div>
      <div className="jp-Dialog-footer">
        <div className="jp-Dialog-footerButtons">
          <button
            type="button"
            className="jp-Dialog-button jp-mod-styled jp-mod-reject"
            onClick={() => props.close(null)}
          >
            <div className="jp-Dialog-buttonLabel">Cancel</div>
          </button>
          <button
            type="submit"
            className="jp-Dialog-button jp-mod-styled jp-mod-accept"
            disabled={busy}
          >
            <div className="jp-Dialog-buttonLabel">
              {busy ? 'Adding…' : 'Add'}
            </div>
          </button>
        </div>
      </div>
    </form>
  );
}
