from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class DefaultPagination(PageNumberPagination):
    """Page-number pagination with a client-chosen page size, capped; a malformed size is a 400, not ignored."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_number(self, request, paginator):
        values = request.query_params.getlist(self.page_query_param)
        if not values:
            return 1
        raw = values[-1]
        if len(values) > 1 or not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) < 1:
            raise ValidationError({self.page_query_param: ["A page number from 1."]})
        return int(raw)

    def get_page_size(self, request):
        values = request.query_params.getlist(self.page_size_query_param)
        if not values:
            return self.page_size
        raw = values[-1]
        valid = raw.isascii() and raw.isdigit() and len(raw) <= 3
        if len(values) > 1 or not valid or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"One whole number from 1 to {self.max_page_size}."]})
        return int(raw)
