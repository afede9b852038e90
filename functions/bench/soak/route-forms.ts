/** The three ways a function is reached: the Hosting route, the short and the full direct form. */
const FORMS = [
  { create: "/api/v1/chatbot/session", message: (id: string) => `/api/v1/chatbot/session/${id}/message`, end: (id: string) => `/api/v1/chatbot/session/${id}` },
  { create: "/createSession", message: (id: string) => `/sendMessage/${id}`, end: (id: string) => `/endSession/${id}` },
  {
    create: "/demo-chatify/us-central1/createSession",
    message: (id: string) => `/demo-chatify/us-central1/sendMessage/${id}`,
    end: (id: string) => `/demo-chatify/us-central1/endSession/${id}`,
  },
] as const;

export type RouteForm = (typeof FORMS)[number];

export function routeForm(index: number): RouteForm {
  return FORMS[index % FORMS.length] ?? FORMS[0];
}

export const ROUTE_FORMS = FORMS.length;
