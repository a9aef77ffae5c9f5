/**
 * The `python` field of a local kernel: a text input that offers the environments found on the
 * server's machine (conda environments, virtual environments, kernelspecs' interpreters) as a list
 * to pick from, while any path can still be typed.
 */
import * as React from 'react';

import type { IPythonChoice } from '../api';
import type { ComputeModel } from '../model';
import { type IControlProps, TextInput } from './SchemaForm';

export const PYTHON_FIELD = 'python';

/** The environments `GET /pythons` finds, asked once while `active`; [] until they come, or if they cannot. */
export function usePythons(
  model: ComputeModel,
  active: boolean
): IPythonChoice[] {
  const [pythons, setPythons] = React.useState<IPythonChoice[]>([]);
  React.useEffect(() => {
    if (!active) {
      return;
    }
    let live = true;
    model.api.listPythons().then(
      found => live && setPythons(found),
      () => live && setPythons([])
    );
    return () => {
      live = false;
    };
  }, [model, active]);
  return pythons;
}

export function PythonPicker(
  props: IControlProps & { pythons: IPythonChoice[] }
): JSX.Element {
  const { pythons, value, onChange, ...input } = props;
  const listId = `${input.id}-choices`;
  return (
    <>
      <TextInput
        {...input}
        list={listId}
        placeholder={
          pythons.length
            ? `e.g. ${pythons[0].path}, or pick an environment`
            : 'e.g. ~/.venvs/analysis'
        }
        value={value}
        onChange={event => onChange(event.target.value)}
      />
      <datalist id={listId}>
        {pythons.map(p => (
          <option key={p.path} value={p.path} label={p.label}>
            {p.label}
          </option>
        ))}
      </datalist>
    </>
  );
}
