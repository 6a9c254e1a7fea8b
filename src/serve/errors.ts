// Errors answered to API clients, in OpenAI's shape: {"error": {message, type, param, code}}.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  get type(): string {
    if (this.status === 404) return 'not_found_error';
    if (this.status >= 500) return 'server_error';
    return 'invalid_request_error';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: the request is malformed (bad JSON, wrong types, values out of range, unsupported options). */
export function badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, param, code);
}

/** 422: well-formed, but the model cannot take it (too many tokens, ids outside the vocabulary). */
export function unprocessable(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(422, message, param, code);
}
